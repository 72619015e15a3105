//! Dynamic images (`/v1/images/...`): Tachyon's arguments rendered by the
//! built-in image-styles plugin in its sandbox, checked by decoding what
//! is served; variants kept per version of the original and bounded per
//! original; broken and oversized images end one request, never the host.

use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use silo_tests::TestSilo;
use silo_tests::http::{Client, Reply, Sidecar};

fn volumes(images: &str) -> String {
    format!(
        "[volumes.public]\nbackend = \"local\"\npath = \"volumes/public\"\nvisibility = \"public\"\n\n\
         [volumes.public.images]\n{images}\n\n\
         [volumes.private]\nbackend = \"local\"\npath = \"volumes/private\"\n"
    )
}

const RENDERER: &str = r#"
[[plugins]]
name = "image-styles"
component = "builtin:image-styles"
events = ["image/jpeg", "image/png", "image/webp", "image/gif"]
styles = ["image"]
limits = { memory_mib = 256, time_ms = 20000 }
grants = [
    { volume = "public", access = ["read"] },
    { volume = "public", prefix = "styles", access = ["read", "write", "delete"] },
    { volume = "public", prefix = "variants", access = ["read", "write", "delete"] },
]
"#;

/// A Silo rendering dynamic images, its sidecar, and a way to put
/// originals in place (straight through the storage core).
async fn setup(images: &str) -> (Arc<silo_host::Silo>, Sidecar, tempfile::TempDir) {
    let t = TestSilo::with_volumes(RENDERER, &[], &volumes(images)).await.unwrap();
    let silo = Arc::new(t.silo);
    let sidecar = Sidecar::start(silo.clone()).await;
    (silo, sidecar, t.dir)
}

async fn put(silo: &silo_host::Silo, path: &str, bytes: Vec<u8>, content_type: &str) {
    silo_tests::store(silo, "public", path, bytes, content_type).await;
}

async fn get(sidecar: &Sidecar, query: &str, accept: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("accept", *a)).collect();
    Client::default()
        .get(&sidecar.url(&format!("/v1/images/public/photo.jpg?{query}")), &headers)
        .await
        .unwrap()
}

/// Dimensions and format of a served image, decoded.
fn decoded(reply: &Reply) -> (u32, u32, image::ImageFormat) {
    let format = image::guess_format(&reply.body).unwrap();
    let img = image::load_from_memory(&reply.body).unwrap();
    (img.width(), img.height(), format)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_argument_gives_the_size_and_format_asked_for() {
    use image::ImageFormat::{Jpeg, Png, WebP};
    let (silo, sidecar, _dir) = setup("").await;
    put(&silo, "photo.jpg", silo_tests::jpeg(400, 200), "image/jpeg").await;
    for (query, expected) in [
        ("w=200", (200, 100, Jpeg)),
        ("h=50", (100, 50, Jpeg)),
        ("w=100&h=100", (100, 50, Jpeg)),
        ("w=100&h=100&crop=1", (100, 100, Jpeg)),
        ("resize=120,80", (120, 80, Jpeg)),
        ("fit=100,100", (100, 50, Jpeg)),
        ("lb=100,100", (100, 100, Jpeg)),
        ("crop=0,0,50,50", (200, 100, Jpeg)),
        ("crop=10px,10px,40px,30px", (40, 30, Jpeg)),
        ("w=100&zoom=2", (200, 100, Jpeg)),
        ("w=800", (400, 200, Jpeg)),
        ("format=png", (400, 200, Png)),
        ("w=100&format=webp", (100, 50, WebP)),
        ("w=100&strip=all", (100, 50, Jpeg)),
    ] {
        let reply = get(&sidecar, query, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text());
        assert_eq!(decoded(&reply), expected, "{query}");
        let content_type = reply.header("content-type").unwrap();
        assert_eq!(
            image::ImageFormat::from_mime_type(content_type),
            Some(expected.2),
            "{query}"
        );
        assert!(reply.header("etag").is_some() && reply.header("cache-control").is_some());
    }
    // webp=1 forces WebP, as Tachyon documents it, whatever the client's
    // Accept: the answer does not vary by it.
    for accept in [Some("image/avif,image/webp,*/*"), Some("image/png,*/*"), None] {
        let webp = get(&sidecar, "w=100&webp=1", accept).await;
        assert_eq!(decoded(&webp), (100, 50, WebP), "{accept:?}");
        assert_eq!(webp.header("vary"), None, "{accept:?}");
    }
    // A volume can have it follow the client's Accept instead, and say so.
    let (by_accept, by_accept_sidecar, _by_accept_dir) = setup("webp_by_accept = true").await;
    put(&by_accept, "photo.jpg", silo_tests::jpeg(400, 200), "image/jpeg").await;
    let webp = get(&by_accept_sidecar, "w=100&webp=1", Some("image/avif,image/webp,*/*")).await;
    assert_eq!(decoded(&webp), (100, 50, WebP));
    assert_eq!(webp.header("vary"), Some("Accept"));
    let jpeg = get(&by_accept_sidecar, "w=100&webp=1", Some("image/png,*/*")).await;
    assert_eq!(decoded(&jpeg), (100, 50, Jpeg));
    assert_eq!(jpeg.header("vary"), Some("Accept"));
    // Quality is applied.
    let low = get(&sidecar, "quality=10", None).await;
    let high = get(&sidecar, "quality=95", None).await;
    assert!(
        low.body.len() * 2 < high.body.len(),
        "{} vs {}",
        low.body.len(),
        high.body.len()
    );
    // HEAD answers as GET does, without the body.
    let head = Client::default()
        .send(
            Method::HEAD,
            &sidecar.url("/v1/images/public/photo.jpg?w=200"),
            &[],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    // The same arguments in another order are the same variant, derived once.
    let before = silo.derivations();
    let again = get(&sidecar, "h=100&crop=1&w=100", None).await;
    assert_eq!(decoded(&again), (100, 100, Jpeg));
    assert_eq!(silo.derivations(), before, "served from the stored variant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exif_orientation_transparency_and_deep_pngs() {
    let (silo, sidecar, _dir) = setup("").await;
    // A PNG with transparency to WebP keeps its alpha.
    let mut rgba = image::RgbaImage::new(64, 32);
    for (x, _, p) in rgba.enumerate_pixels_mut() {
        *p = image::Rgba([255, 0, 0, if x < 32 { 0 } else { 255 }]);
    }
    let mut png = std::io::Cursor::new(Vec::new());
    rgba.write_to(&mut png, image::ImageFormat::Png).unwrap();
    put(&silo, "photo.jpg", png.into_inner(), "image/png").await;
    let reply = get(&sidecar, "format=webp", None).await;
    let img = image::load_from_memory(&reply.body).unwrap().to_rgba8();
    assert_eq!(
        (img.width(), img.get_pixel(0, 0)[3], img.get_pixel(63, 0)[3]),
        (64, 0, 255)
    );
    // A 16-bit PNG is served as 8-bit.
    let deep = image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(40, 20, image::Rgb([65535, 0, 0]));
    let mut png16 = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb16(deep)
        .write_to(&mut png16, image::ImageFormat::Png)
        .unwrap();
    put(&silo, "photo.jpg", png16.into_inner(), "image/png").await;
    let reply = get(&sidecar, "w=20", None).await;
    assert_eq!(decoded(&reply), (20, 10, image::ImageFormat::Png));
    assert_eq!(
        image::load_from_memory(&reply.body).unwrap().color(),
        image::ColorType::Rgb8
    );
    // A JPEG whose EXIF says "rotate 90°": served upright (portrait).
    put(&silo, "photo.jpg", rotated_jpeg(80, 40), "image/jpeg").await;
    let reply = get(&sidecar, "format=png", None).await;
    assert_eq!(decoded(&reply), (40, 80, image::ImageFormat::Png));
}

/// A large JPEG is decoded at a fraction of its size (as libvips shrinks
/// on load): the picture served is the one a full decode and resize gives,
/// upright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_jpegs_shrunk_on_load_give_the_same_picture() {
    let (silo, sidecar, _dir) = setup("").await;
    let original = silo_tests::jpeg(1600, 800);
    let full = image::load_from_memory(&original).unwrap();
    for (query, expected) in [
        ("w=100", (100, 50)),
        ("resize=150,150", (150, 150)),
        ("fit=300,300", (300, 150)),
    ] {
        put(&silo, "photo.jpg", original.clone(), "image/jpeg").await;
        let reply = get(&sidecar, &format!("{query}&format=png"), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text());
        let served = image::load_from_memory(&reply.body).unwrap().to_rgb8();
        assert_eq!(served.dimensions(), expected, "{query}");
        let reference = if query.starts_with("resize") {
            full.resize_to_fill(expected.0, expected.1, image::imageops::FilterType::Triangle)
        } else {
            full.resize(expected.0, expected.1, image::imageops::FilterType::Triangle)
        }
        .to_rgb8();
        let difference = mean_difference(&served, &reference);
        assert!(
            difference < 4.0,
            "{query}: differs from a full decode by {difference:.1} a channel"
        );
    }
    // Upright: EXIF's rotation applies to the shrunk decode too.
    put(&silo, "photo.jpg", rotated_jpeg(1600, 800), "image/jpeg").await;
    let reply = get(&sidecar, "w=100&format=png", None).await;
    let served = image::load_from_memory(&reply.body).unwrap().to_rgb8();
    let reference = full
        .rotate90()
        .resize(100, 200, image::imageops::FilterType::Triangle)
        .to_rgb8();
    assert_eq!(served.dimensions(), (100, 200));
    let difference = mean_difference(&served, &reference);
    assert!(difference < 4.0, "rotated: differs by {difference:.1} a channel");
    // Within a memory limit that the full decode (36 MB for 4000 x 3000)
    // would not fit in.
    let small = TestSilo::with_volumes(
        &RENDERER.replace("memory_mib = 256", "memory_mib = 24"),
        &[],
        &volumes(""),
    )
    .await
    .unwrap();
    let small_silo = Arc::new(small.silo);
    let small_sidecar = Sidecar::start(small_silo.clone()).await;
    put(&small_silo, "photo.jpg", silo_tests::jpeg(4000, 3000), "image/jpeg").await;
    let reply = get(&small_sidecar, "w=400", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(decoded(&reply), (400, 300, image::ImageFormat::Jpeg));
    // A truncated large JPEG is read as far as it goes, as a small one is.
    put(
        &silo,
        "photo.jpg",
        original[..original.len() / 3].to_vec(),
        "image/jpeg",
    )
    .await;
    let truncated = get(&sidecar, "w=100", None).await;
    assert_eq!(truncated.status, StatusCode::OK, "{}", truncated.text());
    assert_eq!(decoded(&truncated), (100, 50, image::ImageFormat::Jpeg));
}

/// The mean absolute difference of two images' channels.
fn mean_difference(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    let total: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    total as f64 / a.as_raw().len() as f64
}

/// A JPEG of `w` x `h` with an EXIF orientation of 6 (rotate 90° clockwise).
fn rotated_jpeg(w: u32, h: u32) -> Vec<u8> {
    let plain = silo_tests::jpeg(w, h);
    // APP1 "Exif\0\0", a little-endian TIFF header with one IFD entry:
    // tag 0x0112 (orientation), type SHORT, count 1, value 6.
    let mut tiff = b"II*\0\x08\0\0\0".to_vec();
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&6u16.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes());
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = plain[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&plain[2..]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_refused_by_name() {
    let (silo, sidecar, _dir) = setup("").await;
    put(&silo, "photo.jpg", silo_tests::jpeg(40, 20), "image/jpeg").await;
    for (query, name) in [
        ("w=0", "`w`"),
        ("w=abc", "`w`"),
        ("bogus=1", "`bogus`"),
        ("crop=1", "`crop`"),
        ("quality=101", "`quality`"),
        ("format=gif", "`format`"),
        ("w=10&w=20", "`w`"),
        ("zoom=100", "`zoom`"),
    ] {
        let reply = get(&sidecar, query, None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(reply.text().contains(name), "{query}: {}", reply.text());
    }
    assert_eq!(silo.derivations(), 0);
    let missing = Client::default()
        .get(&sidecar.url("/v1/images/public/none.jpg?w=10"), &[])
        .await
        .unwrap();
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

/// A PNG that declares `w` x `h` pixels and holds almost nothing.
fn declared_png(w: u32, h: u32) -> Vec<u8> {
    fn crc(bytes: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for b in bytes {
            c ^= u32::from(*b);
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc(&body).to_be_bytes());
        out
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    // An empty zlib stream: the rows are missing.
    png.extend(chunk(b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    png.extend(chunk(b"IEND", &[]));
    png
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_and_oversized_images_end_one_request() {
    let (silo, sidecar, _dir) = setup("").await;
    // A truncated JPEG is served as far as it decodes (as Tachyon's
    // decoder does), its missing rows grey.
    let jpeg = silo_tests::jpeg(300, 200);
    put(&silo, "photo.jpg", jpeg[..jpeg.len() / 3].to_vec(), "image/jpeg").await;
    let truncated = get(&sidecar, "w=150", None).await;
    assert_eq!(truncated.status, StatusCode::OK, "{}", truncated.text());
    assert_eq!(decoded(&truncated), (150, 100, image::ImageFormat::Jpeg));
    // Bytes that are no image at all behind a JPEG signature: 422.
    let mut garbage = b"\xFF\xD8\xFF\xDB\x00\x43".to_vec();
    garbage.extend(std::iter::repeat_n(0xA5u8, 4000));
    put(&silo, "photo.jpg", garbage, "image/jpeg").await;
    let malformed = get(&sidecar, "w=100", None).await;
    assert_eq!(
        malformed.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        malformed.text()
    );
    // A decompression bomb: 50,000 x 50,000 declared in a few bytes.
    put(&silo, "photo.jpg", declared_png(50_000, 50_000), "image/png").await;
    let bomb = get(&sidecar, "w=100", None).await;
    assert_eq!(bomb.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", bomb.text());
    // The host is fine and serves the next good image.
    put(&silo, "photo.jpg", silo_tests::jpeg(300, 200), "image/jpeg").await;
    let fine = get(&sidecar, "w=150", None).await;
    assert_eq!(decoded(&fine), (150, 100, image::ImageFormat::Jpeg));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_original_never_serves_an_old_variant() {
    let (silo, sidecar, _dir) = setup("").await;
    put(&silo, "photo.jpg", silo_tests::jpeg(400, 200), "image/jpeg").await;
    assert_eq!(decoded(&get(&sidecar, "w=100", None).await).1, 50);
    put(&silo, "photo.jpg", silo_tests::jpeg(200, 200), "image/jpeg").await;
    assert_eq!(decoded(&get(&sidecar, "w=100", None).await).1, 100);
    // The old version's variant is gone; the new one's is the only one.
    let host = silo.storage().host_session();
    let listed = host
        .list("public", "variants/photo.jpg/", true, None, 100)
        .await
        .unwrap();
    assert_eq!(listed.entries.len(), 1, "{:?}", listed.entries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_distinct_widths_stay_within_the_bound() {
    let (silo, sidecar, _dir) = setup("max_variants = 20").await;
    put(&silo, "photo.jpg", silo_tests::jpeg(400, 200), "image/jpeg").await;
    let client = Client::default();
    let mut requests = tokio::task::JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(16));
    for w in 1..=1000 {
        let (client, url, limit) = (
            client.clone(),
            sidecar.url(&format!("/v1/images/public/photo.jpg?w={w}")),
            limit.clone(),
        );
        requests.spawn(async move {
            let _slot = limit.acquire().await.unwrap();
            client.get(&url, &[]).await.unwrap().status
        });
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(status) = requests.join_next().await {
        *statuses.entry(status.unwrap().as_u16()).or_insert(0) += 1;
    }
    assert_eq!(statuses.get(&200), Some(&20), "{statuses:?}");
    assert_eq!(statuses.get(&403), Some(&980), "{statuses:?}");
    // Storage and CPU: 20 variants stored, 20 derivations run.
    let host = silo.storage().host_session();
    let stored = host
        .list("public", "variants/photo.jpg/", true, None, 1000)
        .await
        .unwrap();
    assert_eq!(stored.entries.len(), 20);
    assert_eq!(silo.derivations(), 20);

    // With allowed sizes, other widths are refused before any work.
    let (silo, sidecar, _dir) = setup("sizes = [100, 200]").await;
    put(&silo, "photo.jpg", silo_tests::jpeg(400, 200), "image/jpeg").await;
    assert_eq!(get(&sidecar, "w=100", None).await.status, StatusCode::OK);
    let other = get(&sidecar, "w=150", None).await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
    assert!(
        other.text().contains("not a size this volume serves"),
        "{}",
        other.text()
    );
    assert_eq!(silo.derivations(), 1);
}

async fn variants(silo: &silo_host::Silo, path: &str) -> usize {
    let host = silo.storage().host_session();
    host.list("public", &format!("variants/{path}/"), true, None, 1000)
        .await
        .unwrap()
        .entries
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_go_with_their_original_when_it_is_replaced_or_deleted() {
    let (silo, sidecar, _dir) = setup("").await;
    let client = Client::default();
    let auth = format!("Bearer {}", silo_tests::http::TOKEN);
    let upload = |bytes: Vec<u8>| {
        let (client, url, auth) = (client.clone(), sidecar.url("/v1/files/public/photo.jpg"), auth.clone());
        async move {
            let reply = client
                .send(
                    Method::PUT,
                    &url,
                    &[("authorization", &auth), ("content-type", "image/jpeg")],
                    Bytes::from(bytes),
                )
                .await
                .unwrap();
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        }
    };
    upload(silo_tests::jpeg(400, 200)).await;
    get(&sidecar, "w=100", None).await;
    get(&sidecar, "w=200", None).await;
    assert_eq!(variants(&silo, "photo.jpg").await, 2);
    // Replaced through the sidecar: the old version's variants go at once.
    upload(silo_tests::jpeg(300, 300)).await;
    assert_eq!(variants(&silo, "photo.jpg").await, 0);
    assert_eq!(decoded(&get(&sidecar, "w=100", None).await).1, 100);
    assert_eq!(variants(&silo, "photo.jpg").await, 1);
    // Deleted: its variants go too.
    let deleted = client
        .send(
            Method::DELETE,
            &sidecar.url("/v1/files/public/photo.jpg"),
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(variants(&silo, "photo.jpg").await, 0);
    assert_eq!(get(&sidecar, "w=100", None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_volumes_serve_only_the_urls_the_cms_made() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("image-key");
    std::fs::write(&key_file, "image-signing-key-0123456789\n").unwrap();
    let (silo, sidecar, _dir) = setup(&format!("signing_key_file = \"{}\"", key_file.display())).await;
    put(&silo, "photo.jpg", silo_tests::jpeg(400, 200), "image/jpeg").await;
    let key = b"image-signing-key-0123456789";
    let sign = |query: &str| silo_host::images::signature(key, "photo.jpg", query);
    let signed = get(&sidecar, &format!("w=100&h=50&s={}", sign("w=100&h=50")), None).await;
    assert_eq!(signed.status, StatusCode::OK, "{}", signed.text());
    assert_eq!(decoded(&signed), (100, 50, image::ImageFormat::Jpeg));
    for query in [
        "w=100&h=50".to_owned(),
        format!("w=101&h=50&s={}", sign("w=100&h=50")),
        format!(
            "w=100&h=50&s={}",
            silo_host::images::signature(b"another-key-0123456789", "photo.jpg", "w=100&h=50")
        ),
        "w=100&h=50&s=zz".to_owned(),
    ] {
        let reply = get(&sidecar, &query, None).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{query}");
        assert!(reply.text().contains("bad-signature"), "{}", reply.text());
    }
    assert_eq!(silo.derivations(), 1, "nothing derived for an unsigned URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_animated_gif_gives_its_first_frame() {
    let (silo, sidecar, _dir) = setup("").await;
    let mut gif = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut gif);
        for color in [[255, 0, 0, 255], [0, 0, 255, 255]] {
            let frame = image::Frame::new(image::RgbaImage::from_pixel(40, 20, image::Rgba(color)));
            encoder.encode_frame(frame).unwrap();
        }
    }
    put(&silo, "photo.jpg", gif, "image/gif").await;
    let reply = get(&sidecar, "w=20", None).await;
    assert_eq!(
        decoded(&reply),
        (20, 10, image::ImageFormat::Png),
        "a GIF is served as PNG"
    );
    let img = image::load_from_memory(&reply.body).unwrap().to_rgb8();
    assert_eq!(img.get_pixel(5, 5).0, [255, 0, 0], "the first frame");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_a_variant_another_derived() {
    let bucket = silo_tests::s3::bucket("images").await;
    let url_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(url_file.path(), silo_tests::pg::database("images").await).unwrap();
    let volumes = format!(
        "[metadata]\nbackend = \"postgres\"\nurl_file = \"{}\"\n\n{}",
        url_file.path().display(),
        silo_tests::s3::volume_toml("public", &bucket, "public", "visibility = \"public\""),
    );
    let a = TestSilo::with_volumes(RENDERER, &[], &volumes).await.unwrap();
    let b = TestSilo::with_volumes(RENDERER, &[], &volumes).await.unwrap();
    let (a, b) = (Arc::new(a.silo), Arc::new(b.silo));
    put(&a, "photo.jpg", silo_tests::jpeg(400, 200), "image/jpeg").await;
    let (on_a, on_b) = (Sidecar::start(a.clone()).await, Sidecar::start(b.clone()).await);
    let first = get(&on_a, "w=100", None).await;
    assert_eq!(decoded(&first), (100, 50, image::ImageFormat::Jpeg));
    let second = get(&on_b, "w=100", None).await;
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("etag"), first.header("etag"));
    assert_eq!((a.derivations(), b.derivations()), (1, 0));
}
