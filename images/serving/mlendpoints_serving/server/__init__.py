"""`mlendpoints-serve`: the model server (transport, protocol codecs, batching, worker processes)."""
