"""Text made safe for a terminal (stdlib only).

A model's answer may hold any character. Printed raw, control characters act on the terminal: \\r
returns to the start of the line and hides what came before, \\x7f, \\x08 erase, ESC and the C1 CSI
start escape sequences that can move the cursor, recolour or retitle the window. The command line shows
them escaped instead (the Python way: \\r, \\x7f, \\x9b), keeping newlines and tabs; the API's text
stays exact. One character maps to one string, so pieces of a stream can be escaped as they arrive.
"""

from __future__ import annotations

_KEPT = "\n\t"
_CONTROLS = [*range(0x00, 0x20), 0x7f, *range(0x80, 0xa0)]  # C0, DEL, C1
_ESCAPES = {code: repr(chr(code))[1:-1] for code in _CONTROLS if chr(code) not in _KEPT}


def terminal_safe(text: str) -> str:
    """`text` with every C0/C1 control character but newline and tab written as its escape."""
    return text.translate(_ESCAPES)
