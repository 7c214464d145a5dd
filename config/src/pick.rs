//! Picking a backend from a weighted split.
//!
//! Three ways, one set of weights:
//! - **cohort**: a request with a cohort key goes where [`crate::cohort`]
//!   sends that key (sticky, monotonic);
//! - **random**: otherwise, a uniform 64-bit random number supplied by the
//!   caller is mapped onto the cumulative weights;
//! - **sequence**: for load tests, the n-th request of the split takes the
//!   n-th point of a golden-ratio (Weyl) sequence instead of a random number.
//!   Its shares match the weights to within about one request over any run.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::cohort;
use crate::compile::{BackendId, RequestHead};
use crate::spec::SplitMode;
use crate::validate::KeySource;

/// 2^64 / golden ratio, odd: the increment of the Weyl sequence.
const WEYL_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

/// Where a pick sends the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A backend of the table.
    Backend(BackendId),
    /// A reference that resolves to no backend: answer 500.
    Unresolved,
}

/// The outcome of a pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picked {
    /// Where to send the request.
    pub target: Target,
    /// Whether the cohort key decided (sticky) rather than chance.
    pub sticky: bool,
}

/// A compiled weighted split.
#[derive(Debug)]
pub struct Split {
    choices: Box<[Choice]>,
    total: u64,
    cohort: Option<Cohort>,
    mode: SplitMode,
    sequence: AtomicU64,
}

/// One entry of a split.
#[derive(Debug, Clone)]
pub struct Choice {
    /// Where this entry sends requests.
    pub target: Target,
    /// Weight as written in the table.
    pub weight: u32,
    /// Weight used for picks: 0 when the backend is draining.
    pub effective_weight: u32,
    /// Sum of effective weights up to and including this entry.
    cumulative: u64,
    /// Cohort hash seed of the entry's name.
    seed: u64,
}

/// How a split finds a request's cohort key.
#[derive(Debug, Clone)]
pub struct Cohort {
    from: KeySource,
    fallback: Option<KeySource>,
    assign_cookie: Option<AssignCookie>,
}

/// The cookie that keeps a key-less client on its cohort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignCookie {
    /// Cookie name.
    pub name: String,
    /// Cookie lifetime.
    pub max_age: Duration,
}

// === impl Split ===

impl Split {
    /// Builds a split from `(target, name, weight, effective weight)` entries.
    pub(crate) fn new(
        entries: Vec<(Target, &str, u32, u32)>,
        cohort: Option<Cohort>,
        mode: SplitMode,
    ) -> Self {
        let mut cumulative = 0u64;
        let choices = entries
            .into_iter()
            .map(|(target, name, weight, effective_weight)| {
                cumulative += u64::from(effective_weight);
                Choice {
                    target,
                    weight,
                    effective_weight,
                    cumulative,
                    seed: cohort::backend_seed(name),
                }
            })
            .collect();
        Self {
            choices,
            total: cumulative,
            cohort,
            mode,
            sequence: AtomicU64::new(0),
        }
    }

    /// The entries of the split, in name order.
    pub fn choices(&self) -> &[Choice] {
        &self.choices
    }

    /// The cohort settings, when the split is sticky.
    pub fn cohort(&self) -> Option<&Cohort> {
        self.cohort.as_ref()
    }

    /// Picks a target. `key` is the request's cohort key (if any), `random`
    /// a uniform random number used only when there is no key and the mode is
    /// random. `None` when every effective weight is 0 (all draining).
    pub fn pick(&self, key: Option<&[u8]>, random: u64) -> Option<Picked> {
        self.pick_with(key, random, |_| false)
    }

    /// [`Split::pick`], except that a cohort may still land on a draining
    /// backend for which `soft_open` holds (a soft drain before its
    /// deadline), as if it had its table weight: cohorts already on it stay,
    /// nobody new arrives. Requests without a key never go there.
    pub fn pick_with(
        &self,
        key: Option<&[u8]>,
        random: u64,
        soft_open: impl Fn(BackendId) -> bool,
    ) -> Option<Picked> {
        if let (Some(key), Some(_)) = (key, &self.cohort) {
            let candidates = self.choices.iter().map(|c| {
                let weight = match c.target {
                    Target::Backend(id) if c.effective_weight == 0 && soft_open(id) => c.weight,
                    _ => c.effective_weight,
                };
                (c.seed, weight)
            });
            let index = cohort::rendezvous(key, candidates)?;
            return Some(Picked {
                target: self.choices[index].target,
                sticky: true,
            });
        }
        if self.total == 0 {
            return None;
        }
        let point = match self.mode {
            SplitMode::Random => random,
            SplitMode::Sequence => self
                .sequence
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(WEYL_STEP),
        };
        // Scale the 64-bit point onto [0, total) without modulo bias.
        let position = ((u128::from(point) * u128::from(self.total)) >> 64) as u64;
        let index = self
            .choices
            .partition_point(|choice| choice.cumulative <= position);
        self.choices.get(index).map(|choice| Picked {
            target: choice.target,
            sticky: false,
        })
    }
}

// === impl Cohort ===

impl Cohort {
    pub(crate) fn new(
        from: KeySource,
        fallback: Option<KeySource>,
        assign_cookie: Option<AssignCookie>,
    ) -> Self {
        Self {
            from,
            fallback,
            assign_cookie,
        }
    }

    /// The cookie to assign to key-less clients, if configured.
    pub fn assign_cookie(&self) -> Option<&AssignCookie> {
        self.assign_cookie.as_ref()
    }

    /// The request's cohort key: the first source that is present.
    pub fn key<'a>(&self, head: &RequestHead<'a>) -> Option<Cow<'a, [u8]>> {
        read_key(&self.from, head)
            .or_else(|| self.fallback.as_ref().and_then(|s| read_key(s, head)))
    }
}

fn read_key<'a>(source: &KeySource, head: &RequestHead<'a>) -> Option<Cow<'a, [u8]>> {
    let value = match source {
        KeySource::Header(name) => head.headers.get(name).map(|v| Cow::Borrowed(v.as_bytes())),
        KeySource::Cookie(name) => cookie_value(head.headers, name).map(Cow::Borrowed),
        KeySource::Query(name) => head.query_param(name),
    };
    value.filter(|v| !v.is_empty())
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| {
                let value = pair[eq + 1..].trim_ascii();
                value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(value)
            })
        })
}
