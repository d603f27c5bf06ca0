"""The batch driver, `mlendpoints-batch`: mini-batches of files scored by worker processes, exactly once.

Layout: settings (flags) -> job (check output, plan, phases) -> coordinator (worker
processes, retries, timeouts, error threshold, status) -> worker (readers, scoring,
atomic parts) -> merge (output file, errors.jsonl, summary.json).
"""
