//! Dynamic images: Tachyon's URL arguments, checked and normalised by the
//! host, rendered by a sandboxed plugin (the derive hook's `image` style)
//! and kept as variants of their original.
//!
//! A variant is stored once, at `variants/<original path>/<etag>/<args>.<ext>`
//! where `<etag>` and `<args>` are hashes of the original's etag and of the
//! normalised arguments: a replaced original never serves an old variant,
//! and an original's variants share one prefix (counted against the
//! volume's cap, and removed with it).

use serde::Deserialize;

/// The prefix variants live under, in the original's volume.
pub const VARIANTS: &str = "variants";
/// Largest side a request may ask for (after zoom).
pub const MAX_SIDE: u32 = 8192;

/// What a volume allows (`[volumes.<name>.images]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// Widths (and heights) a request may ask for, after zoom; empty: any
    /// up to 8192. Requests for others are refused: the bound on the
    /// variants of one original is then the number of combinations.
    #[serde(default)]
    pub sizes: Vec<u32>,
    /// Most variants kept per version of an original (default 100); a new
    /// one past it is refused.
    #[serde(default = "default_max_variants")]
    pub max_variants: usize,
    /// A file holding the key image URLs must be signed with (`s=`, see
    /// [`signature`]); unset: unsigned URLs are served.
    pub signing_key_file: Option<std::path::PathBuf>,
    /// `webp=1` gives WebP only to clients whose `Accept` names
    /// `image/webp`, and the answer carries `Vary: Accept`. Off (the
    /// default), `webp=1` forces WebP, as Tachyon documents it.
    #[serde(default)]
    pub webp_by_accept: bool,
}

fn default_max_variants() -> usize {
    100
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            sizes: Vec::new(),
            max_variants: default_max_variants(),
            signing_key_file: None,
            webp_by_accept: false,
        }
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JPEG.
    Jpeg,
    /// PNG.
    Png,
    /// WebP.
    Webp,
}

impl Format {
    /// Its name in arguments (`jpeg`, …).
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Webp => "webp",
        }
    }

    /// The file extension of its variants.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jpeg => "jpg",
            Format::Png => "png",
            Format::Webp => "webp",
        }
    }

    fn parse(text: &str) -> Option<Format> {
        match text {
            "jpeg" | "jpg" => Some(Format::Jpeg),
            "png" => Some(Format::Png),
            "webp" => Some(Format::Webp),
            _ => None,
        }
    }

    /// The format an original of `content_type` is served in by default
    /// (GIF becomes PNG, as in Tachyon).
    pub fn of(content_type: &str) -> Option<Format> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "image/jpeg" => Some(Format::Jpeg),
            "image/png" | "image/gif" => Some(Format::Png),
            "image/webp" => Some(Format::Webp),
            _ => None,
        }
    }
}

/// A crop box: percentages of the original, or pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Crop {
    /// `crop=1`: with `w` and `h`, fill them (cropping the overflow).
    Cover,
    /// `x,y,w,h`: each in percent (`0`-`100`) or pixels (`Npx`).
    Box([(f64, bool); 4]),
}

/// A request's arguments, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageArgs {
    /// `w`: the width, pixels.
    pub w: Option<u32>,
    /// `h`: the height, pixels.
    pub h: Option<u32>,
    /// `crop`.
    pub crop: Option<Crop>,
    /// `resize`: exactly this size.
    pub resize: Option<(u32, u32)>,
    /// `fit`: within this size, proportions kept.
    pub fit: Option<(u32, u32)>,
    /// `lb`: letterboxed to this size.
    pub lb: Option<(u32, u32)>,
    /// `zoom`: a factor for every dimension.
    pub zoom: Option<f64>,
    /// `quality`, 1 to 100.
    pub quality: Option<u8>,
    /// `strip`: which metadata to drop (`all`, `info` or `color`).
    pub strip: Option<&'static str>,
    /// `webp`: WebP output.
    pub webp: bool,
    /// `format`: the output format.
    pub format: Option<Format>,
}

/// An argument that cannot be taken, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("argument `{name}`: {why}")]
pub struct BadArgument {
    /// The argument.
    pub name: String,
    /// Why it cannot be taken.
    pub why: String,
}

fn bad(name: &str, why: impl Into<String>) -> BadArgument {
    BadArgument {
        name: name.to_owned(),
        why: why.into(),
    }
}

fn side(name: &str, text: &str) -> Result<u32, BadArgument> {
    let text = text.strip_suffix("px").unwrap_or(text);
    match text.parse::<u32>() {
        Ok(n) if (1..=MAX_SIDE).contains(&n) => Ok(n),
        _ => Err(bad(name, format!("'{text}' is not a size of 1 to {MAX_SIDE} pixels"))),
    }
}

fn pair(name: &str, text: &str) -> Result<(u32, u32), BadArgument> {
    match text.split(',').collect::<Vec<_>>()[..] {
        [w, h] => Ok((side(name, w)?, side(name, h)?)),
        _ => Err(bad(name, "takes `width,height`")),
    }
}

impl ImageArgs {
    /// Parse a query string's pairs (already percent-decoded). Unknown or
    /// repeated arguments are refused, never ignored.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<ImageArgs, BadArgument> {
        let mut args = ImageArgs::default();
        let mut seen = std::collections::BTreeSet::new();
        for (name, value) in pairs {
            if !seen.insert(name.to_owned()) {
                return Err(bad(name, "is given more than once"));
            }
            match name {
                "w" => args.w = Some(side(name, value)?),
                "h" => args.h = Some(side(name, value)?),
                "crop" => {
                    args.crop = Some(match value {
                        "1" | "true" => Crop::Cover,
                        _ => {
                            let parts: Vec<_> = value.split(',').collect();
                            let [x, y, w, h] = parts[..] else {
                                return Err(bad(name, "takes `1` or `x,y,w,h` (percent, or pixels with `px`)"));
                            };
                            let mut parsed = [(0.0, false); 4];
                            for (slot, text) in parsed.iter_mut().zip([x, y, w, h]) {
                                let (number, px) = match text.strip_suffix("px") {
                                    Some(n) => (n, true),
                                    None => (text, false),
                                };
                                let n: f64 = number
                                    .parse()
                                    .ok()
                                    .filter(|n: &f64| n.is_finite() && *n >= 0.0 && (px || *n <= 100.0))
                                    .ok_or_else(|| bad(name, format!("'{text}' is not a percentage or pixels")))?;
                                *slot = (n, px);
                            }
                            Crop::Box(parsed)
                        }
                    })
                }
                "resize" => args.resize = Some(pair(name, value)?),
                "fit" => args.fit = Some(pair(name, value)?),
                "lb" => args.lb = Some(pair(name, value)?),
                "zoom" => {
                    args.zoom = Some(
                        value
                            .parse::<f64>()
                            .ok()
                            .filter(|z| z.is_finite() && (0.1..=10.0).contains(z))
                            .ok_or_else(|| bad(name, "takes a number from 0.1 to 10"))?,
                    )
                }
                "quality" => {
                    args.quality = Some(
                        value
                            .parse::<u8>()
                            .ok()
                            .filter(|q| (1..=100).contains(q))
                            .ok_or_else(|| bad(name, "takes 1 to 100"))?,
                    )
                }
                "strip" => {
                    args.strip = Some(match value {
                        "all" => "all",
                        "info" => "info",
                        "color" => "color",
                        _ => return Err(bad(name, "takes `all`, `info` or `color`")),
                    })
                }
                "webp" => {
                    args.webp = match value {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => return Err(bad(name, "takes `1` or `0`")),
                    }
                }
                "format" => {
                    args.format = Some(Format::parse(value).ok_or_else(|| bad(name, "takes `jpeg`, `png` or `webp`"))?)
                }
                other => return Err(bad(other, "is not an argument of this endpoint")),
            }
        }
        if args.crop == Some(Crop::Cover) && (args.w.is_none() || args.h.is_none()) {
            return Err(bad("crop", "`crop=1` needs both `w` and `h`"));
        }
        if [args.resize.is_some(), args.fit.is_some(), args.lb.is_some()]
            .iter()
            .filter(|x| **x)
            .count()
            > 1
        {
            return Err(bad("resize", "give one of `resize`, `fit` and `lb`"));
        }
        Ok(args)
    }

    /// The sizes asked for, zoom applied; refused past [`MAX_SIDE`] or
    /// outside `allowed` (when it lists any).
    fn sized(&self, allowed: &[u32]) -> Result<Sizes, BadArgument> {
        let zoom = self.zoom.unwrap_or(1.0);
        let scale = |name: &str, n: u32| -> Result<u32, BadArgument> {
            let z = (f64::from(n) * zoom).round() as u32;
            if !(1..=MAX_SIDE).contains(&z) {
                return Err(bad(
                    name,
                    format!("comes to {z} pixels with the zoom, past 1 to {MAX_SIDE}"),
                ));
            }
            if !allowed.is_empty() && !allowed.contains(&z) {
                return Err(bad(
                    name,
                    format!("{z} pixels is not a size this volume serves ({allowed:?})"),
                ));
            }
            Ok(z)
        };
        let scale_pair = |name: &str, p: Option<(u32, u32)>| -> Result<Option<(u32, u32)>, BadArgument> {
            p.map(|(w, h)| Ok((scale(name, w)?, scale(name, h)?))).transpose()
        };
        Ok(Sizes {
            w: self.w.map(|n| scale("w", n)).transpose()?,
            h: self.h.map(|n| scale("h", n)).transpose()?,
            resize: scale_pair("resize", self.resize)?,
            fit: scale_pair("fit", self.fit)?,
            lb: scale_pair("lb", self.lb)?,
        })
    }

    /// The parameters the plugin gets (see the WIT's `derive-request`), in
    /// a fixed order, `format` being the one decided. A crop in percent
    /// stays in percent: the plugin resolves it against the original.
    pub fn params(&self, format: Format, allowed: &[u32]) -> Result<Vec<(String, String)>, BadArgument> {
        let sizes = self.sized(allowed)?;
        let mut out = Vec::new();
        let mut push = |k: &str, v: String| out.push((k.to_owned(), v));
        if let Some(Crop::Box(parts)) = self.crop {
            let text: Vec<String> = parts
                .iter()
                .map(|(n, px)| if *px { format!("{n}px") } else { format!("{n}") })
                .collect();
            push("crop", text.join(","));
        }
        for (name, p) in [("resize", sizes.resize), ("fit", sizes.fit), ("lb", sizes.lb)] {
            if let Some((w, h)) = p {
                push(name, format!("{w},{h}"));
            }
        }
        if let Some(w) = sizes.w {
            push("w", w.to_string());
        }
        if let Some(h) = sizes.h {
            push("h", h.to_string());
        }
        if self.crop == Some(Crop::Cover) {
            push("cover", "1".into());
        }
        push("quality", self.effective_quality().to_string());
        push("format", format.name().into());
        if let Some(strip) = self.strip {
            push("strip", strip.into());
        }
        Ok(out)
    }

    /// The quality asked for, else 82 lowered as the zoom grows (so a 2x
    /// image costs about what a 1x one does), as Tachyon does.
    fn effective_quality(&self) -> u8 {
        if let Some(q) = self.quality {
            return q;
        }
        let zoom = self.zoom.unwrap_or(1.0);
        if zoom <= 1.0 {
            return 82;
        }
        let base = 82.0_f64;
        let value = (base - (zoom.ln() / (base / zoom).ln()) * (base * zoom)).round();
        value.clamp((base / zoom).round(), base) as u8
    }

    /// The format to serve: `format`, else WebP when `webp=1` and the
    /// client takes it (`accepts_webp`: its `Accept` names WebP, or the
    /// volume forces WebP), else the original's.
    pub fn format(&self, original: Format, accepts_webp: bool) -> Format {
        match self.format {
            Some(f) => f,
            None if self.webp && accepts_webp => Format::Webp,
            None => original,
        }
    }

    /// Whether the answer depends on the client's `Accept`.
    pub fn varies_by_accept(&self) -> bool {
        self.format.is_none() && self.webp
    }
}

struct Sizes {
    w: Option<u32>,
    h: Option<u32>,
    resize: Option<(u32, u32)>,
    fit: Option<(u32, u32)>,
    lb: Option<(u32, u32)>,
}

/// The signature (`s=`) of an image URL: HMAC-SHA256 with the volume's
/// key over the file's path (as stored, not percent-encoded), `?`, and the
/// query string as sent without `s`; lower-case hex.
pub fn signature(key: &[u8], path: &str, query: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(path.as_bytes());
    mac.update(b"?");
    mac.update(query.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `given` is the signature of `path` and `query`, compared in
/// constant time.
pub fn signed(key: &[u8], path: &str, query: &str, given: &str) -> bool {
    use hmac::Mac;
    let Ok(given) = hex::decode(given) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(path.as_bytes());
    mac.update(b"?");
    mac.update(query.as_bytes());
    mac.verify_slice(&given).is_ok()
}

/// Where the variant of `path` (at version `etag`) for `params` lives, and
/// the prefix of all of that version's variants.
pub fn variant_path(path: &str, etag: &str, params: &[(String, String)], format: Format) -> (String, String) {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for (k, v) in params {
        hash.update(k.as_bytes());
        hash.update(b"=");
        hash.update(v.as_bytes());
        hash.update(b"&");
    }
    let args = hex::encode(&hash.finalize()[..12]);
    let dir = version_dir(path, etag);
    (format!("{dir}{args}.{}", format.extension()), dir)
}

/// The prefix of the variants of version `etag` of `path`.
pub fn version_dir(path: &str, etag: &str) -> String {
    use sha2::Digest;
    let version = hex::encode(&sha2::Sha256::digest(etag.as_bytes())[..8]);
    format!("{VARIANTS}/{path}/{version}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &[(&str, &str)]) -> Result<ImageArgs, BadArgument> {
        ImageArgs::parse(q.iter().copied())
    }

    #[test]
    fn arguments_are_checked_and_named() {
        assert_eq!(parse(&[("w", "300")]).unwrap().w, Some(300));
        for (query, name) in [
            (&[("w", "0")][..], "w"),
            (&[("w", "9000")][..], "w"),
            (&[("h", "abc")][..], "h"),
            (&[("quality", "101")][..], "quality"),
            (&[("zoom", "NaN")][..], "zoom"),
            (&[("crop", "1,2,3")][..], "crop"),
            (&[("crop", "1")][..], "crop"),
            (&[("fit", "300")][..], "fit"),
            (&[("strip", "exif")][..], "strip"),
            (&[("format", "gif")][..], "format"),
            (&[("w", "1"), ("w", "2")][..], "w"),
            (&[("bogus", "1")][..], "bogus"),
            (&[("fit", "1,1"), ("lb", "1,1")][..], "resize"),
        ] {
            assert_eq!(parse(query).unwrap_err().name, name, "{query:?}");
        }
    }

    #[test]
    fn parameters_are_normalised_with_zoom_and_sizes() {
        let args = parse(&[("h", "100"), ("w", "200"), ("zoom", "2"), ("crop", "1")]).unwrap();
        let params = args.params(Format::Webp, &[]).unwrap();
        let text: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(text, ["w=400", "h=200", "cover=1", "quality=51", "format=webp"]);
        // The same request in another order is the same variant.
        let again = parse(&[("crop", "1"), ("zoom", "2"), ("w", "200"), ("h", "100")]).unwrap();
        assert_eq!(again.params(Format::Webp, &[]).unwrap(), params);
        assert_eq!(
            args.params(Format::Webp, &[400]).unwrap_err().name,
            "h",
            "200 is not an allowed size"
        );
        let (a, dir) = variant_path("p/cat.jpg", "e1", &params, Format::Webp);
        let (b, _) = variant_path("p/cat.jpg", "e2", &params, Format::Webp);
        assert!(a.starts_with(&dir) && dir.starts_with("variants/p/cat.jpg/") && a.ends_with(".webp"));
        assert_ne!(a, b, "another version of the original, another variant");
    }
}
