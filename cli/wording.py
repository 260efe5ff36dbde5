"""Wording shared by the commands' one-line summaries."""


def counted(count: int, noun: str) -> str:
    """``"1 triangle"``, ``"12 triangles"``: the count with its noun in the right number."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
