"""`mlendpoints-fetch`: download a model (registry, run, object store, https, local) into a directory."""
