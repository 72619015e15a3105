"""A Python CMS's view of the Silo sidecar, with `requests`.

Usage: sidecar_client.py BASE_URL TOKEN IMAGE
Exits non-zero (with the failed assertion) if the sidecar misbehaves.
"""
import sys

import requests

base, token, image_path = sys.argv[1:4]
auth = {"Authorization": f"Bearer {token}"}
image = open(image_path, "rb").read()
files = f"{base}/v1/files"

# Upload: the pipeline runs; the report lists the derived styles.
r = requests.put(f"{files}/public/photos/sunset.jpg", data=image,
                 headers={**auth, "Content-Type": "image/jpeg"})
assert r.status_code == 201, (r.status_code, r.text)
report = r.json()
assert report["status"] == "accepted", report
styles = {d["style"] for d in report["derivatives"]}
assert {"thumbnail", "medium"} <= styles, report

# Read whole, then a range, then conditionally.
r = requests.get(f"{files}/public/photos/sunset.jpg")
assert r.status_code == 200 and r.content == image
assert r.headers["Content-Type"] == "image/jpeg"
assert r.headers["X-Content-Type-Options"] == "nosniff"
etag = r.headers["ETag"]
r = requests.get(f"{files}/public/photos/sunset.jpg", headers={"Range": "bytes=100-199"})
assert r.status_code == 206 and r.content == image[100:200], r.status_code
assert r.headers["Content-Range"] == f"bytes 100-199/{len(image)}"
r = requests.get(f"{files}/public/photos/sunset.jpg", headers={"If-None-Match": etag})
assert r.status_code == 304 and r.content == b""

# A private file: not without the token; with a signed URL, yes.
secret = b"quarterly numbers\n"
r = requests.put(f"{files}/private/reports/q3.txt", data=secret,
                 headers={**auth, "Content-Type": "text/plain"})
assert r.status_code == 201, r.text
assert requests.get(f"{files}/private/reports/q3.txt").status_code == 401
r = requests.get(f"{base}/v1/sign/private/reports/q3.txt", params={"expires_in": 60}, headers=auth)
assert r.status_code == 200, r.text
signed = r.json()["url"]
r = requests.get(f"{base}{signed}")
assert r.status_code == 200 and r.content == secret, r.status_code
r = requests.get(f"{base}{signed.replace('q3.txt', 'q4.txt')}")
assert r.status_code == 401, r.status_code

# A style that is gone is derived again on request.
r = requests.delete(f"{files}/public/styles/medium/photos/sunset.jpg", headers=auth)
assert r.status_code == 204, r.status_code
r = requests.get(f"{base}/v1/styles/medium/public/photos/sunset.jpg")
assert r.status_code == 200, (r.status_code, r.text)
assert r.headers["Content-Type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
assert len(r.content) < len(image)

# A rejected upload stores nothing.
r = requests.put(f"{files}/public/photos/fake.jpg", data=b"<html>not an image</html>",
                 headers={**auth, "Content-Type": "image/jpeg"})
assert r.status_code in (403, 422), (r.status_code, r.text)
assert requests.get(f"{files}/public/photos/fake.jpg").status_code == 404

# Delete.
r = requests.delete(f"{files}/public/photos/sunset.jpg", headers=auth)
assert r.status_code == 204
assert requests.get(f"{files}/public/photos/sunset.jpg").status_code == 404
print("ok")
