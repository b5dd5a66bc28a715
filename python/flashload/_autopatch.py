"""Imported at interpreter start-up by flashload's .pth hook when FLASHLOAD_PATCH=1."""

import os
import sys

if os.environ.get("FLASHLOAD_PATCH") == "1":
    try:
        from flashload._patch import patch

        patch()
    except Exception as error:  # never break interpreter start-up
        print(f"flashload: FLASHLOAD_PATCH=1 but patching failed: {error}", file=sys.stderr)
