"""Size limits of the wire model, shared by both decoders (see codec.py)."""

from __future__ import annotations

from typing import Final

#: Default limit on one encoded frame.
DEFAULT_MAX_FRAME_BYTES: Final = 4 * 1024 * 1024
#: Limit on identifiers, names, versions and timestamps.
MAX_NAME_CHARS: Final = 256
#: Limit on the number of entries of tags, identity chains and agent lists.
MAX_LIST_ITEMS: Final = 256
#: Limit on the number of headers in a frame.
MAX_HEADERS: Final = 64
#: Limit on one header value.
MAX_HEADER_CHARS: Final = 8192
#: Limit on an error message.
MAX_MESSAGE_CHARS: Final = 65536
#: Limit on an EMCL ciphertext (base64 of the largest frame, with room to spare).
MAX_CIPHERTEXT_CHARS: Final = DEFAULT_MAX_FRAME_BYTES * 2
