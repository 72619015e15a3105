"""svg-sanitizer: refuses SVG uploads that could run or fetch anything.

A CMS serves uploaded SVGs to browsers, and an SVG is a document: it can
carry scripts, event handlers and references that make the browser fetch
other resources. This plugin parses the upload with the standard library
and rejects, with the reason, any SVG that has
- a DOCTYPE or entity declaration (entity expansion, external entities);
- a `script`, `foreignObject`, `iframe`, `embed` or `object` element;
- an event-handler attribute (`onload`, `onclick`, ...);
- a reference outside the document: `href` / `xlink:href` / `src` not
  starting with `#` (data: URIs of images excepted), or `url(...)` or
  `@import` in style that does not point inside it;
- a `javascript:` URL anywhere in an attribute.
Anything else is accepted unchanged. Settings: `max_bytes` (default 2 MiB).
"""

import re
import xml.etree.ElementTree as ET

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import handler
from wit_world.imports import files, log, types

ACTIVE_ELEMENTS = {"script", "foreignobject", "iframe", "embed", "object", "handler", "listener"}
REFERENCE_ATTRIBUTES = {"href", "src"}
CSS_URL = re.compile(r"url\(\s*['\"]?\s*([^'\")\s]*)", re.IGNORECASE)
SAFE_DATA = re.compile(r"data:image/(png|jpeg|gif|webp);base64,", re.IGNORECASE)


def local_name(name: str) -> str:
    return name.rsplit("}", 1)[-1].rsplit(":", 1)[-1].lower()


def outside(reference: str) -> bool:
    reference = reference.strip()
    return not (reference == "" or reference.startswith("#") or SAFE_DATA.match(reference))


def style_problem(css: str) -> str | None:
    if "@import" in css.lower():
        return "an @import in style"
    for target in CSS_URL.findall(css):
        if outside(target):
            return f"a style url() outside the document ({target[:80]})"
    return None


def problem(svg: bytes) -> str | None:
    head = svg[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in svg.lower():
        return "a DOCTYPE or entity declaration"
    try:
        root = ET.fromstring(svg)
    except ET.ParseError as e:
        return f"not well-formed XML ({e})"
    if local_name(root.tag) != "svg":
        return f"the root element is <{local_name(root.tag)}>, not <svg>"
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        name = local_name(element.tag)
        if name in ACTIVE_ELEMENTS:
            return f"a <{name}> element"
        if name == "style":
            found = style_problem(element.text or "")
            if found:
                return found
        for attribute, value in element.attrib.items():
            attr = local_name(attribute)
            if attr.startswith("on"):
                return f"an event-handler attribute ({attr}) on <{name}>"
            if "javascript:" in value.lower().replace(" ", ""):
                return f"a javascript: URL in {attr} on <{name}>"
            if attr in REFERENCE_ATTRIBUTES and outside(value):
                return f"a reference outside the document ({attr}={value[:80]}) on <{name}>"
            if attr == "style":
                found = style_problem(value)
                if found:
                    return found
    return None


class Handler(exports.Handler):
    def on_upload(self, upload: handler.Upload) -> handler.Outcome:
        settings = dict(upload.settings)
        limit = int(settings.get("max_bytes", str(2 * 1024 * 1024)))
        if upload.info.size > limit:
            return handler.Outcome_Reject(f"SVG of {upload.info.size} bytes, over the {limit}-byte limit")
        svg = files.read(upload.file)
        found = problem(svg)
        if found:
            log.log(log.Level.INFO, f"refused {upload.file.path}: {found}")
            return handler.Outcome_Reject(f"unsafe SVG: {found}")
        return handler.Outcome_Accept([])

    def on_derive(self, request: handler.DeriveRequest) -> handler.DerivedFile:
        raise Err(types.Error_Unsupported())
