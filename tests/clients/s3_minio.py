"""What a Python CMS does with minio-py (the MinIO client, which Wagtail
and Django sites use through django-minio-storage) against Silo's S3
endpoint: uploads in one request and in parts, stat, listings, reads, a
presigned GET and PUT, and removal. The ETags it is given are compared
with the MD5s of the bytes sent, as sync tools compare them.

Usage: s3_minio.py HOST:PORT ACCESS_KEY SECRET_KEY BUCKET
Prints "ok", or exits non-zero with the failed assertion.
"""
import hashlib
import io
import sys
import urllib.request

from minio import Minio
from minio.error import S3Error

host, key, secret, bucket = sys.argv[1:5]
client = Minio(host, access_key=key, secret_key=secret, secure=False, region="us-east-1")


def data(seed, size):
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


small = data(1, 50_000)
client.put_object(bucket, "minio/small.bin", io.BytesIO(small), len(small))
stat = client.stat_object(bucket, "minio/small.bin")
assert stat.size == len(small), stat.size
assert stat.etag == hashlib.md5(small).hexdigest(), (stat.etag, hashlib.md5(small).hexdigest())

# 12 MiB in 5 MiB parts: S3's multipart ETag.
large = data(2, 12 << 20)
part = 5 << 20
client.put_object(bucket, "minio/large.bin", io.BytesIO(large), len(large), part_size=part)
digests = b"".join(hashlib.md5(large[i : i + part]).digest() for i in range(0, len(large), part))
stat = client.stat_object(bucket, "minio/large.bin")
assert stat.etag == hashlib.md5(digests).hexdigest() + "-3", stat.etag
response = client.get_object(bucket, "minio/large.bin")
try:
    assert response.read() == large
finally:
    response.close()
    response.release_conn()

listed = {o.object_name: o.etag for o in client.list_objects(bucket, prefix="minio/", recursive=True)}
assert listed == {
    "minio/small.bin": hashlib.md5(small).hexdigest(),
    "minio/large.bin": hashlib.md5(digests).hexdigest() + "-3",
}, listed

# Presigned URLs, as a CMS hands them to a browser.
url = client.presigned_put_object(bucket, "minio/presigned.txt")
request = urllib.request.Request(url, data=b"sent by a browser", method="PUT")
with urllib.request.urlopen(request) as reply:
    assert reply.status == 200, reply.status
with urllib.request.urlopen(client.presigned_get_object(bucket, "minio/presigned.txt")) as reply:
    assert reply.read() == b"sent by a browser"

# A refused name is an error the client reports, and nothing is stored.
try:
    client.put_object(bucket, "minio/shell.php", io.BytesIO(b"<?php system($_GET['c']);"), 25)
    raise AssertionError("shell.php was stored")
except S3Error as e:
    assert e.code == "AccessDenied", e.code

for name in ["minio/small.bin", "minio/large.bin", "minio/presigned.txt"]:
    client.remove_object(bucket, name)
assert not list(client.list_objects(bucket, prefix="minio/", recursive=True))
print("ok")
