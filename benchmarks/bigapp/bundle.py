"""The benchmark app's asset pipeline (run by its front image's build): every group of assets/ becomes one
bundle per kind, minified (comments and blank lines out, whitespace folded), written as is and gzip -9,
named by its content hash, listed in manifest.json. Real work in proportion to the assets, offline.

usage: python3 bundle.py SRC_DIR OUT_DIR
"""
import gzip
import hashlib
import json
import re
import sys
from pathlib import Path

src, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
manifest = {}
for kind in ("js", "css"):
    for group in sorted(p for p in (src / kind).glob("*") if p.is_dir()):
        parts = []
        for f in sorted(group.glob(f"*.{kind}")):
            text = f.read_text()
            text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
            text = "\n".join(re.sub(r"\s+", " ", ln).strip() for ln in text.splitlines() if ln.strip())
            parts.append(text)
        data = ("\n".join(parts) + "\n").encode()
        name = f"{group.name}.{hashlib.sha256(data).hexdigest()[:12]}.{kind}"
        (out / name).write_bytes(data)
        (out / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=9))
        manifest[f"{group.name}.{kind}"] = name
(out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
print(f"bundle.py: {len(manifest)} bundles from {src}")
