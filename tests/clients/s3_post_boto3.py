"""Browser-form uploads (POST Object) as a Django or Flask CMS makes them:
the server signs a POST policy with boto3's generate_presigned_post, and
the form is posted (here with urllib3, as a browser would send it).

Usage: s3_post_boto3.py ENDPOINT ACCESS_KEY SECRET_KEY
Exits non-zero (with the failed assertion) if the endpoint misbehaves.
"""
import hashlib
import struct
import sys
import time
import urllib.parse
import xml.etree.ElementTree as ET
import zlib

import boto3
import urllib3
from botocore.client import Config
from botocore.exceptions import ClientError

endpoint, key, secret = sys.argv[1:4]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id=key,
    aws_secret_access_key=secret,
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}),
)
http = urllib3.PoolManager()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# A 1x1 RGBA PNG.
PNG = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0))
       + png_chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00\xff")) + png_chunk(b"IEND", b""))


def presign(key="uploads/${filename}", fields=None, conditions=None, expires=300):
    return s3.generate_presigned_post(
        "public", key, Fields=fields or {}, Conditions=conditions or [], ExpiresIn=expires)


def post(post, name, data, content_type="application/octet-stream", extra=(), change=None):
    fields = dict(post["fields"])
    fields.update(change or {})
    form = list(fields.items()) + list(extra) + [("file", (name, data, content_type))]
    r = http.request("POST", post["url"], fields=form, redirect=False)
    return r.status, r.headers, r.data.decode("utf-8", "replace")


def code(body):
    return ET.fromstring(body).findtext("Code")


def missing(key):
    try:
        s3.head_object(Bucket="public", Key=key)
    except ClientError as e:
        return e.response["Error"]["Code"] == "404"
    return False


# An image, named by the browser, with the type and the answer the policy
# fixes: 201 and S3's document; the ETag is the MD5 of the bytes.
p = presign(fields={"Content-Type": "image/png", "success_action_status": "201",
                    "x-amz-meta-owner": "7"},
            conditions=[["starts-with", "$key", "uploads/"], {"Content-Type": "image/png"},
                        {"success_action_status": "201"}, {"x-amz-meta-owner": "7"},
                        ["content-length-range", 1, 100000]])
status, headers, body = post(p, "dot.png", PNG, "image/png")
assert status == 201, (status, body)
doc = ET.fromstring(body)
etag = '"' + hashlib.md5(PNG).hexdigest() + '"'
assert doc.findtext("Key") == "uploads/dot.png" and doc.findtext("Bucket") == "public", body
assert doc.findtext("ETag") == etag and headers["ETag"] == etag, (body, headers)
assert doc.findtext("Location").endswith("/public/uploads/dot.png"), body
head = s3.head_object(Bucket="public", Key="uploads/dot.png")
assert head["ContentType"] == "image/png" and head["ContentLength"] == len(PNG), head
assert head["Metadata"] == {"owner": "7"}, head
assert s3.get_object(Bucket="public", Key="uploads/dot.png")["Body"].read() == PNG

# No success_action_status: 204, as S3 answers. Conditions hold for the
# fields as sent: `${filename}` in the key is replaced only once they do.
p = presign(conditions=[{"key": "uploads/${filename}"}])
status, headers, body = post(p, "note.txt", b"a note", "text/plain")
assert status == 204, (status, body)
assert s3.get_object(Bucket="public", Key="uploads/note.txt")["Body"].read() == b"a note"

# success_action_redirect: 303 to it, with the bucket, key and ETag.
p = presign(fields={"success_action_redirect": "https://cms.example.test/done?form=1"},
            conditions=[{"success_action_redirect": "https://cms.example.test/done?form=1"}])
status, headers, body = post(p, "r.txt", b"redirected", "text/plain")
assert status == 303, (status, body)
target = urllib.parse.urlsplit(headers["Location"])
query = urllib.parse.parse_qs(target.query)
assert target.netloc == "cms.example.test" and query["form"] == ["1"], headers
assert query["key"] == ["uploads/r.txt"] and query["bucket"] == ["public"], query
assert query["etag"] == ['"' + hashlib.md5(b"redirected").hexdigest() + '"'], query

# Judged as a PUT is: a PHP file is refused, and nothing is stored.
p = presign()
status, _, body = post(p, "shell.php", b"<?php system($_GET['c']);", "image/png")
assert status == 403 and code(body) == "AccessDenied", (status, body)
assert missing("uploads/shell.php")

# The policy holds: a key outside its prefix, a field it does not name, a
# changed type, a file outside its length range, a forged signature, an
# expired policy; each refused, nothing stored.
p = presign(key="uploads/${filename}", conditions=[["starts-with", "$key", "uploads/"]])
status, _, body = post(p, "x.txt", b"x", change={"key": "elsewhere/x.txt"})
assert status == 403 and code(body) == "AccessDenied" and "starts-with" in body, (status, body)
assert missing("elsewhere/x.txt")
status, _, body = post(p, "x.txt", b"x", extra=[("x-amz-meta-extra", "1")])
assert status == 403 and "Extra input fields" in body, (status, body)
p = presign(fields={"Content-Type": "image/png"}, conditions=[{"Content-Type": "image/png"}])
status, _, body = post(p, "y.txt", b"y", change={"Content-Type": "text/html"})
assert status == 403 and code(body) == "AccessDenied", (status, body)
p = presign(conditions=[["content-length-range", 1, 10]])
status, _, body = post(p, "big.txt", b"z" * 11, "text/plain")
assert status == 400 and code(body) == "EntityTooLarge", (status, body)
assert missing("uploads/big.txt")
p = presign(conditions=[["content-length-range", 5, 10]])
status, _, body = post(p, "small.txt", b"z", "text/plain")
assert status == 400 and code(body) == "EntityTooSmall", (status, body)
assert missing("uploads/small.txt")
p = presign()
forged = p["fields"]["x-amz-signature"][:-4] + "0000"
status, _, body = post(p, "f.txt", b"f", change={"x-amz-signature": forged})
assert status == 403 and code(body) == "SignatureDoesNotMatch", (status, body)
p = presign(expires=1)
time.sleep(2)
status, _, body = post(p, "late.txt", b"late")
assert status == 403 and "expired" in body, (status, body)
for name in ["f.txt", "late.txt", "x.txt", "y.txt"]:
    assert missing("uploads/" + name), name

# No policy at all is no upload.
status, _, body = post({"url": p["url"], "fields": {"key": "uploads/anon.txt"}}, "anon.txt", b"anon")
assert status == 400 and code(body) == "InvalidArgument", (status, body)
assert missing("uploads/anon.txt")
print("ok")
