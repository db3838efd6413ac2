"""Each inline script once per page.

Two of the theme's extensions register their inline setup scripts twice, so every page
declared ``const THEBE_JS_URL`` twice and the browser reported a SyntaxError on each page.
After the build, this keeps the first of identical inline ``<script>`` lines in every page.
"""

import re
from pathlib import Path

INLINE_SCRIPT = re.compile(r"^\s*<script>.*</script>\s*$")


def _unique_inline_scripts(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    for page in Path(app.outdir).rglob("*.html"):
        lines = page.read_text(encoding="utf-8").split("\n")
        seen, kept = set(), []
        for line in lines:
            if INLINE_SCRIPT.match(line):
                if line.strip() in seen:
                    continue
                seen.add(line.strip())
            kept.append(line)
        if len(kept) != len(lines):
            page.write_text("\n".join(kept), encoding="utf-8")


def setup(app):
    app.connect("build-finished", _unique_inline_scripts)
    return {"parallel_read_safe": True}
