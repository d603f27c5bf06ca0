class V2Columns:
    """The V2 decoder of one model's float64 column signature (see src/lib.rs)."""

    def __init__(self, names: list[str], datatypes: list[str]) -> None:
        """The signature's column names, in order; the V2 datatypes an input may name."""
    def decode(self, body: bytes) -> tuple[bytearray, int, str | None] | None:
        """(column-major float64 values, rows, request id), or None: not the common request."""
