"""Azure ML CLI v2 YAML -> mlendpoints resources (`mlendpoints import azureml`, `local up -f azure.yml`).

`table.py` is the one place where the mapping lives: one row per Azure field.
`importer.py` reads the files, finds each file's Azure kind, walks its fields
through the table and validates what comes out with the API's own rules.
Nothing here talks to a cluster: it sits beside `render`, above `api`.
"""

from mlendpoints.azureml import azure_check
from mlendpoints.azureml.context import Finding, ImportOptions
from mlendpoints.azureml.importer import (
    Imported,
    import_document,
    import_file,
    import_files,
    is_azure_document,
    to_yaml,
)

__all__ = [
    "Finding",
    "ImportOptions",
    "Imported",
    "azure_check",
    "import_document",
    "import_file",
    "import_files",
    "is_azure_document",
    "to_yaml",
]
