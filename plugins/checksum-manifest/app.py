"""checksum-manifest: records a SHA-256 manifest beside every upload.

Written against plain Python file APIs (`open`, `os.makedirs`,
`os.listdir`), with no Silo bindings for storage: Silo serves each granted
volume as the directory `/<volume>`. For an upload at `<volume>/<path>` it
reads the file in 1 MiB chunks, writes `manifests/<path>.sha256` as
`<hex digest>  <file name>` (the format `sha256sum -c` reads), and accepts.
A CMS can then verify a file against its manifest later, or spot a
duplicate by digest.

Settings: `try` (a path): instead, open that path for reading and reject
with what happened (`read <n> bytes` or the exception's class), which shows
what a plugin meets outside its grants.
"""

import hashlib
import os

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import handler
from wit_world.imports import types

CHUNK = 1024 * 1024


def attempt(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f"read {len(f.read())} bytes"
    except OSError as e:
        return type(e).__name__


class Handler(exports.Handler):
    def on_upload(self, upload: handler.Upload) -> handler.Outcome:
        settings = dict(upload.settings)
        if "try" in settings:
            return handler.Outcome_Reject(attempt(settings["try"]))
        volume, path = upload.file.volume, upload.file.path
        digest = hashlib.sha256()
        size = 0
        with open(f"/{volume}/{path}", "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        if size != upload.info.size:
            raise Err(types.Error_Unavailable(f"read {size} of {upload.info.size} bytes"))
        manifest = f"/{volume}/manifests/{path}.sha256"
        directory = os.path.dirname(manifest)
        os.makedirs(directory, exist_ok=True)
        with open(manifest, "w") as f:
            f.write(f"{digest.hexdigest()}  {os.path.basename(path)}\n")
        print(f"{directory} holds {len(os.listdir(directory))} manifests")
        return handler.Outcome_Accept([])

    def on_derive(self, request: handler.DeriveRequest) -> handler.DerivedFile:
        raise Err(types.Error_Unsupported())
