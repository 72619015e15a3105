"""A minimal Django site on django-storages' S3Storage (what Wagtail and
most Django CMSs run on S3): media in the private volume, static files in
the public one, as its settings would put them.

Usage: s3_django.py ENDPOINT ACCESS_KEY SECRET_KEY
Exits non-zero (with the failed assertion) if the endpoint misbehaves.
"""
import os
import sys
import tempfile
import urllib.error
import urllib.request

import django
from django.conf import settings

endpoint, key, secret = sys.argv[1:4]
work = tempfile.mkdtemp()
static_src = os.path.join(work, "assets")
os.makedirs(os.path.join(static_src, "css"))
with open(os.path.join(static_src, "css", "site.css"), "w") as f:
    f.write("body { color: black }")
with open(os.path.join(static_src, "robots.txt"), "w") as f:
    f.write("User-agent: *")

common = {
    "endpoint_url": endpoint,
    "access_key": key,
    "secret_key": secret,
    "region_name": "us-east-1",
    "addressing_style": "path",
    "signature_version": "s3v4",
}
settings.configure(
    DEBUG=False,
    SECRET_KEY="silo-test",
    INSTALLED_APPS=["django.contrib.staticfiles"],
    STATIC_URL="/static/",
    STATICFILES_DIRS=[static_src],
    STORAGES={
        "default": {"BACKEND": "storages.backends.s3.S3Storage",
                    "OPTIONS": {**common, "bucket_name": "private", "location": "media",
                                "file_overwrite": False, "querystring_auth": True}},
        "staticfiles": {"BACKEND": "storages.backends.s3.S3Storage",
                        "OPTIONS": {**common, "bucket_name": "public", "location": "static",
                                    "querystring_auth": False, "default_acl": "public-read"}},
    },
)
django.setup()

from botocore.exceptions import ClientError  # noqa: E402
from django.core.files.base import ContentFile  # noqa: E402
from django.core.files.storage import default_storage, storages  # noqa: E402
from django.core.management import call_command  # noqa: E402


def fetch(url):
    try:
        with urllib.request.urlopen(url) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# Media: save, exists, size, open, a second save under the same name (a
# new name, as file_overwrite = False asks), listdir, a signed URL, delete.
name = default_storage.save("docs/report.txt", ContentFile(b"annual report"))
assert name == "docs/report.txt", name
assert default_storage.exists(name) and default_storage.size(name) == 13
with default_storage.open(name) as f:
    assert f.read() == b"annual report"
again = default_storage.save("docs/report.txt", ContentFile(b"second"))
assert again != name and again.startswith("docs/report_") and again.endswith(".txt"), again
dirs, files = default_storage.listdir("docs")
assert dirs == [] and sorted(files) == sorted(["report.txt", again[len("docs/"):]]), (dirs, files)
dirs, files = default_storage.listdir("")
assert dirs == ["docs"] and files == [], (dirs, files)
signed = default_storage.url(name)
assert "X-Amz-Signature=" in signed, signed
assert fetch(signed) == (200, b"annual report")
unsigned = signed.split("?")[0]
assert fetch(unsigned)[0] == 403, unsigned
assert default_storage.get_modified_time(name).year >= 2024
default_storage.delete(name)
assert not default_storage.exists(name)

# A PHP file is refused, and nothing is stored.
try:
    default_storage.save("docs/shell.php", ContentFile(b"<?php system($_GET['c']);"))
    raise AssertionError("a .php upload was stored")
except ClientError as e:
    assert e.response["Error"]["Code"] == "AccessDenied", e.response
assert not default_storage.exists("docs/shell.php")

# Static files: collectstatic uploads them; public URLs serve them to
# anyone; a second run finds them unmodified and sends nothing.
call_command("collectstatic", interactive=False, verbosity=0)
static = storages["staticfiles"]
assert static.exists("css/site.css") and static.exists("robots.txt")
url = static.url("css/site.css")
assert url == f"{endpoint}/public/static/css/site.css", url
assert fetch(url) == (200, b"body { color: black }")


from django.contrib.staticfiles.management.commands import collectstatic  # noqa: E402

command = collectstatic.Command()
command.set_options(interactive=False, verbosity=0, link=False, clear=False, dry_run=False,
                    ignore_patterns=[], use_default_ignore_patterns=True, post_process=True)
result = command.collect()
assert result["modified"] == [] and len(result["unmodified"]) == 2, result
print("ok")
