//! Reading a subscribe request (`GET`, `HEAD`, or `QUERY` with a form body
//! merged with the query string): its token, its topic matchers and its
//! reconnection cursor, checked as the spec asks.
//!
//! - Matchers: one subscription per `match` / `match_exact` (exact) and
//!   `match_urlpattern` parameter, in the order given; in compatibility
//!   mode also per 0.x `topic` parameter (`*`, exact, or a URI template).
//!   Names are case-sensitive: any other name in the reserved `match`
//!   namespace (and `topic` outside compatibility mode) is a `400`, as are
//!   a value with a control or format character, a pattern longer than
//!   [`MAX_PATTERN_BYTES`], a URL pattern that does not parse, too many
//!   matchers, or none.
//!   A request whose URL patterns and templates are too expensive to
//!   compile (the engine's limits, [`topic::engine`]) is a `400` that names
//!   the limit.
//! - Cursor: the `Last-Event-ID` header, else the `last_event_id`
//!   parameter (the query string's before the body's), else in
//!   compatibility mode the 0.x `lastEventID`. Present at all, even empty,
//!   it makes the answer carry `Mercure-Last-Event-ID`.
//!
//! Compiling matchers never runs on an HTTP worker (one thread for many
//! connections: a slow compile would hold all of them). A short request's
//! matchers are first read with the compiled selectors every request
//! shares; when one must be compiled, or the request has more than
//! [`MAX_INLINE_PARAMETERS`] parameters, the whole reading moves to a
//! compile thread ([`topic::slots`]: a request that waits too long for one
//! is a `503` with `Retry-After`). The token's own matchers are compiled
//! where the token is checked, within the same budget.

use actix_web::HttpRequest;

use super::{
    MercureState,
    auth::{Claims, Role},
    error::MercureError,
    identity::HubIdentity,
    query::first,
    subscriptions::Subscription,
    topic::{self, Compiler, MAX_PATTERN_BYTES, MatchType, SelectorError, slots},
};

/// Most topic matchers one subscribe request may carry (as the reference
/// hub): each is matched against every update.
pub const MAX_MATCHERS: usize = 100;
/// Most 0.x `topic` parameters (the 0.x hub's limit), compatibility mode.
pub const MAX_LEGACY_MATCHERS: usize = 1000;
/// Longest `Last-Event-ID` accepted.
pub const MAX_LAST_EVENT_ID_LEN: usize = 8192;
/// The 0.x spelling of the cursor parameter (compatibility mode).
const LEGACY_LAST_EVENT_ID: &str = "lastEventID";
/// Most parameters a subscribe request may have for its matchers to be
/// read on the HTTP worker (when they are all compiled already). Reading a
/// cached matcher is a few microseconds, but 100 of them and their 7 KB
/// query string take about 0.4 ms of the one thread that serves every
/// connection of its worker: a longer request is read on a compile thread,
/// like one that must compile.
pub const MAX_INLINE_PARAMETERS: usize = 16;

/// A subscribe request, read and checked.
pub struct SubscribeRequest {
    pub hub: HubIdentity,
    pub claims: Claims,
    /// Whether it presented a token (`claims` are the defaults without).
    pub token: bool,
    pub subscriptions: Vec<Subscription>,
    /// The cursor, when the request gave one (possibly empty).
    pub last_event_id: Option<String>,
}

/// Reads a subscribe request: its token (401, or 400 for a token in the
/// URL), its matchers and cursor (400; 503 when its matchers wait too long
/// to be compiled). `params` are the query string's pairs followed by the
/// body's (`QUERY`); `query` the query string's.
pub async fn read_subscribe(
    state: &MercureState,
    req: &HttpRequest,
    query: &[(String, String)],
    params: Vec<(String, String)>,
) -> Result<SubscribeRequest, MercureError> {
    let hub = state.identity(req);
    let claims = subscriber_claims(state, req, query, &hub)?;
    let token = claims.is_some();
    let claims = claims.unwrap_or_default();
    let compatibility = state.settings.mercure.compatibility();
    let last_event_id = last_event_id(req, &params, compatibility)?;
    let matchers = Matchers {
        params,
        claims,
        hub,
        compatibility,
    };
    let inline = match matchers.params.len() <= MAX_INLINE_PARAMETERS {
        true => matchers.read(&mut Compiler::cached_only()),
        false => Err(Unread::NotCompiled),
    };
    let (matchers, subscriptions) = match inline {
        Ok(subscriptions) => (matchers, subscriptions),
        Err(Unread::Refused(err)) => return Err(err),
        Err(Unread::NotCompiled) => off_worker(matchers).await?,
    };
    let Matchers { claims, hub, .. } = matchers;
    Ok(SubscribeRequest {
        hub,
        claims,
        token,
        subscriptions,
        last_event_id,
    })
}

/// What reading the matchers needs, owned: it may move to a blocking
/// thread (an `HttpRequest` may not).
struct Matchers {
    params: Vec<(String, String)>,
    claims: Claims,
    hub: HubIdentity,
    compatibility: bool,
}

impl Matchers {
    fn read(&self, compiler: &mut Compiler) -> Result<Vec<Subscription>, Unread> {
        read_matchers(
            &self.params,
            &self.claims,
            &self.hub,
            self.compatibility,
            compiler,
        )
    }
}

/// Reads `matchers` on a compile thread, with a budget of what the
/// token's matchers left.
async fn off_worker(matchers: Matchers) -> Result<(Matchers, Vec<Subscription>), MercureError> {
    let unavailable = |err: slots::Unavailable| MercureError::Unavailable(err.to_string());
    let read = slots::run(move || {
        let mut compiler = Compiler::continuing(matchers.claims.compiled_bytes);
        let read = matchers.read(&mut compiler);
        (matchers, read)
    })
    .await
    .map_err(unavailable)?;
    match read {
        (matchers, Ok(subscriptions)) => Ok((matchers, subscriptions)),
        (_, Err(Unread::Refused(err))) => Err(err),
        // A compiler that compiles finds nothing missing.
        (_, Err(Unread::NotCompiled)) => Err(unavailable(slots::Unavailable::Failed)),
    }
}

/// Why matchers were not read.
#[derive(Debug)]
enum Unread {
    /// One is not compiled yet, and the compiler compiles nothing
    /// ([`Compiler::cached_only`]).
    NotCompiled,
    /// The request is refused.
    Refused(MercureError),
}

impl From<MercureError> for Unread {
    fn from(err: MercureError) -> Self {
        Self::Refused(err)
    }
}

/// The subscriber's claims: `None` without a token (401 when anonymous
/// subscribers are not allowed, unless the application's hook decides:
/// its allow then stands in for the token, see [`require_credential`]),
/// refused tokens answered as RFC 6750 asks. With no subscriber key
/// configured, nobody is authenticated.
pub fn subscriber_claims(
    state: &MercureState,
    req: &HttpRequest,
    query: &[(String, String)],
    hub: &HubIdentity,
) -> Result<Option<Claims>, MercureError> {
    let anonymous = state.settings.mercure.anonymous || state.settings.hooks.enabled();
    if !state.tokens.verifies(Role::Subscriber) {
        // No key to check a token with (none configured, or only the
        // development key, left out with auth on): everyone is anonymous.
        return match anonymous {
            true => Ok(None),
            false => Err(MercureError::token_required(hub)),
        };
    }
    let claims = state
        .tokens
        .authorize(req, query, Role::Subscriber, hub)
        .map_err(|err| MercureError::auth(hub, err))?;
    if claims.is_none() && !anonymous {
        return Err(MercureError::token_required(hub));
    }
    Ok(claims)
}

/// After the application's hook was asked: a subscriber without a token
/// and without the hook's allow (no hook, skipped, or failed with
/// `allow_public`) is refused when anonymous subscribers are not allowed.
pub fn require_credential(
    state: &MercureState,
    request: &SubscribeRequest,
    hook_allowed: bool,
) -> Result<(), MercureError> {
    if request.token || hook_allowed || state.settings.mercure.anonymous {
        Ok(())
    } else {
        Err(MercureError::token_required(&request.hub))
    }
}

/// One subscription per matcher parameter (see the module docs), its
/// selectors compiled by `compiler`.
fn read_matchers(
    params: &[(String, String)],
    claims: &Claims,
    hub: &HubIdentity,
    compatibility: bool,
    compiler: &mut Compiler,
) -> Result<Vec<Subscription>, Unread> {
    let limit = if compatibility {
        MAX_LEGACY_MATCHERS
    } else {
        MAX_MATCHERS
    };
    let mut subscriptions = Vec::new();
    for (name, value) in params {
        let match_type = match MatchType::from_parameter(name) {
            Some(match_type) => Some(match_type),
            None if name == "topic" && compatibility => None,
            None if name == "topic" || topic::is_match_parameter(name) => {
                return Err(bad_request(format!(
                    "unknown topic matcher parameter {name:?}: use \"match\" (or \"match_exact\") \
                     or \"match_urlpattern\"{}",
                    if name == "topic" {
                        " (the 0.x \"topic\" needs mercure.protocol_version_compatibility = 8)"
                    } else {
                        ""
                    }
                )));
            }
            None => continue,
        };
        if subscriptions.len() == limit {
            return Err(bad_request(format!(
                "at most {limit} topic matchers are allowed"
            )));
        }
        if value.len() > MAX_PATTERN_BYTES {
            return Err(bad_request(format!(
                "a topic matcher is longer than {MAX_PATTERN_BYTES} bytes"
            )));
        }
        if !topic::is_protocol_string(value) {
            return Err(bad_request(
                "topic matchers must not contain control or format characters".into(),
            ));
        }
        let selector = match match_type {
            None => compiler.legacy(value),
            Some(match_type) => compiler.typed(match_type, value, &hub.base),
        }
        .map_err(|err| match err {
            SelectorError::NotCached => Unread::NotCompiled,
            err => bad_request(err.to_string()),
        })?;
        subscriptions.push(Subscription {
            payload: claims.payload_for(selector.as_str()),
            selector,
            match_type,
        });
    }
    if subscriptions.is_empty() {
        return Err(bad_request(
            "missing \"match\" subscription parameter".into(),
        ));
    }
    Ok(subscriptions)
}

/// A `400` for the matchers.
fn bad_request(detail: String) -> Unread {
    Unread::Refused(MercureError::BadRequest(detail))
}

/// The reconnection cursor (see the module docs).
fn last_event_id(
    req: &HttpRequest,
    params: &[(String, String)],
    compatibility: bool,
) -> Result<Option<String>, MercureError> {
    let header = match req.headers().get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| MercureError::BadRequest("Last-Event-ID must be ASCII".into()))?
                .to_owned(),
        ),
        None => None,
    };
    let parameter = |name| first(params, name).map(str::to_owned);
    let parameters = || {
        let modern = parameter("last_event_id");
        match (modern, compatibility) {
            (Some(id), _) if !id.is_empty() => Some(id),
            (modern, true) => parameter(LEGACY_LAST_EVENT_ID)
                .filter(|id| !id.is_empty())
                .or(modern),
            (modern, false) => modern,
        }
    };
    let id = match header {
        Some(id) if !id.is_empty() => Some(id),
        header => parameters().or(header),
    };
    if let Some(id) = &id
        && (id.len() > MAX_LAST_EVENT_ID_LEN || !topic::is_protocol_string(id))
    {
        return Err(MercureError::BadRequest("invalid Last-Event-ID".into()));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mercure::query::parse_pairs;
    use actix_web::test::TestRequest;

    fn hub() -> HubIdentity {
        let req = TestRequest::default()
            .insert_header(("host", "hub.test"))
            .to_http_request();
        HubIdentity::of(&req, "", &crate::config::Settings::defaults().limits)
    }

    fn read(query: &str, compatibility: bool) -> Result<Vec<Subscription>, Unread> {
        let pairs = parse_pairs(query).expect("a query");
        read_matchers(
            &pairs,
            &Claims::default(),
            &hub(),
            compatibility,
            &mut Compiler::default(),
        )
    }

    /// `match*` parameters make subscriptions in order; `topic` only in
    /// compatibility mode; unknown names, bad values and none are 400s.
    #[test]
    fn subscribe_matchers() {
        let subscriptions = read(
            "match=b%7Bx%7D&last_event_id=1&match_exact=*&match_urlpattern=%2Fc%2F%3Aid",
            false,
        )
        .expect("valid");
        let shapes: Vec<_> = subscriptions
            .iter()
            .map(|s| (s.selector.as_str(), s.match_type))
            .collect();
        assert_eq!(
            shapes,
            vec![
                ("b{x}", Some(MatchType::Exact)),
                ("*", Some(MatchType::Exact)),
                ("/c/:id", Some(MatchType::UrlPattern)),
            ]
        );
        assert!(!subscriptions[0].selector.matches("b1"));
        assert!(subscriptions[2].selector.matches("http://hub.test/c/1"));
        let legacy = read("topic=a%7Bx%7D&match=b", true).expect("valid in compatibility mode");
        assert_eq!(legacy[0].match_type, None);
        assert!(legacy[0].selector.matches("a1"));
        let too_many = vec!["match=a"; MAX_MATCHERS + 1].join("&");
        for bad in [
            "topic=a",
            "last_event_id=x",
            "matchURLPattern=a",
            "match_regexp=a",
            "Match=a",
            "matcher=a&match=b",
            "match_urlpattern=https%3A%2F%2Fx%2F(",
            "match=a%0Ab",
            "match=a%E2%80%8Bb",
            too_many.as_str(),
        ] {
            assert!(read(bad, false).is_err(), "{bad}");
        }
    }

    /// The header wins, then `last_event_id` (query before body), then in
    /// compatibility mode `lastEventID`; present but empty still counts.
    #[test]
    fn reconnection_cursor() {
        let cursor = |header: Option<&str>, query: &str, compatibility: bool| {
            let mut req = TestRequest::default();
            if let Some(value) = header {
                req = req.insert_header(("last-event-id", value));
            }
            last_event_id(
                &req.to_http_request(),
                &parse_pairs(query).unwrap(),
                compatibility,
            )
            .unwrap()
        };
        assert_eq!(
            cursor(Some("h"), "last_event_id=q", false).as_deref(),
            Some("h")
        );
        assert_eq!(
            cursor(None, "last_event_id=q&last_event_id=b", false).as_deref(),
            Some("q")
        );
        assert_eq!(cursor(None, "lastEventID=l", false), None);
        assert_eq!(cursor(None, "lastEventID=l", true).as_deref(), Some("l"));
        assert_eq!(cursor(None, "last_event_id=", false).as_deref(), Some(""));
        assert_eq!(cursor(Some(""), "", false).as_deref(), Some(""));
        assert_eq!(cursor(None, "", false), None);
    }
}
