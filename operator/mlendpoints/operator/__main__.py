"""`python -m mlendpoints.operator`: the operator image's entry point (also `mlendpoints operator run`)."""

from mlendpoints.operator.main import main

main()
