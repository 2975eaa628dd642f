//! The relay's HTTP surface: method + path (+ query) → [`Route`], refusing anything else with a
//! reason a client can act on. Ids are checked here, so handlers only see well-formed ones.

/// Length of a device or phone id: 16 random bytes as lowercase hex.
pub const ID_LEN: usize = 32;

/// Every endpoint the Worker serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /` → the app.
    Root,
    /// `GET /health`.
    Health,
    /// `GET /app` and anything under it (the web app's files).
    App(String),
    /// `POST /v1/register` (optional registration secret in `X-Loopsy-Registration-Secret`).
    Register,
    /// `GET /v1/device/<d>/connect`: the daemon's WebSocket (device bearer).
    DeviceConnect(String),
    /// `POST /v1/device/<d>/pair`: issue a pair token (device bearer).
    PairIssue(String),
    /// `POST /v1/device/<d>/redeem`: a phone redeems a pair token (the token is the credential).
    PairRedeem(String),
    /// `GET /v1/device/<d>/phones`: the phones registered here (device bearer).
    PhoneList(String),
    /// `DELETE /v1/device/<d>/phones/<p>`: revoke a phone (device bearer, or that phone's own).
    PhoneRevoke(String, String),
    /// `GET /v1/device/<d>/phones/<p>/connect`: a phone's WebSocket (phone bearer).
    PhoneConnect(String, String),
    /// `POST /v1/device/<d>/tap`: take the frames recorded for tests (device bearer). Served
    /// only when the Worker runs with `LOOPSY_TEST_TAP = "1"`; 404 otherwise.
    TestTap(String),
}

impl Route {
    /// The device this route concerns (its Durable Object), if any.
    pub fn device(&self) -> Option<&str> {
        match self {
            Route::DeviceConnect(d)
            | Route::PairIssue(d)
            | Route::PairRedeem(d)
            | Route::PhoneList(d)
            | Route::PhoneRevoke(d, _)
            | Route::PhoneConnect(d, _)
            | Route::TestTap(d) => Some(d),
            _ => None,
        }
    }

    /// Whether this route upgrades to a WebSocket.
    pub fn is_websocket(&self) -> bool {
        matches!(self, Route::DeviceConnect(_) | Route::PhoneConnect(..))
    }
}

/// Why a request matches no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Unknown path.
    #[error("no such endpoint: {0}")]
    NotFound(String),
    /// Known path, other method.
    #[error("{method} is not allowed here; use {allowed}")]
    MethodNotAllowed {
        /// What was asked.
        method: String,
        /// What works.
        allowed: &'static str,
    },
    /// A malformed device or phone id.
    #[error("{0} is not a valid id (32 lowercase hex characters)")]
    BadId(String),
    /// A credential in the query string.
    #[error(
        "credentials in URLs are refused (URLs end up in logs): send the bearer in Sec-WebSocket-Protocol (loopsy.bearer.<token>) or Authorization"
    )]
    CredentialInUrl,
    /// Any other query on an API route.
    #[error("this endpoint takes no query string")]
    UnexpectedQuery,
}

impl RouteError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            RouteError::NotFound(_) => 404,
            RouteError::MethodNotAllowed { .. } => 405,
            _ => 400,
        }
    }
}

/// Whether `s` is a well-formed id.
pub fn valid_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn id(s: &str) -> Result<String, RouteError> {
    if valid_id(s) {
        Ok(s.to_string())
    } else {
        let shown: String = s.chars().take(40).collect();
        Err(RouteError::BadId(shown))
    }
}

const CREDENTIAL_PARAMS: [&str; 7] = [
    "token",
    "bearer",
    "secret",
    "key",
    "access_token",
    "auth",
    "password",
];

fn check_query(query: Option<&str>) -> Result<(), RouteError> {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return Ok(());
    };
    let credential = q.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or("").to_ascii_lowercase();
        CREDENTIAL_PARAMS
            .iter()
            .any(|c| name == *c || name.ends_with(&format!("_{c}")))
    });
    if credential {
        Err(RouteError::CredentialInUrl)
    } else {
        Err(RouteError::UnexpectedQuery)
    }
}

fn method(
    got: &str,
    want: &'static str,
    route: impl FnOnce() -> Route,
) -> Result<Route, RouteError> {
    if got.eq_ignore_ascii_case(want) {
        Ok(route())
    } else {
        Err(RouteError::MethodNotAllowed {
            method: got.to_string(),
            allowed: want,
        })
    }
}

/// Route a request. `path` is the URL path (no query), `query` the raw query string if any.
pub fn route(http_method: &str, path: &str, query: Option<&str>) -> Result<Route, RouteError> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // Pages: any query is harmless there (the pair link uses the fragment, which never arrives).
    match parts.as_slice() {
        [""] => return method(http_method, "GET", || Route::Root),
        ["health"] => return method(http_method, "GET", || Route::Health),
        ["app", rest @ ..] => {
            let file = rest.join("/");
            return method(http_method, "GET", || Route::App(file));
        }
        _ => {}
    }
    if parts.first() != Some(&"v1") {
        return Err(RouteError::NotFound(path.chars().take(80).collect()));
    }
    check_query(query)?;
    match parts.as_slice() {
        ["v1", "register"] => method(http_method, "POST", || Route::Register),
        ["v1", "device", d, "connect"] => {
            let d = id(d)?;
            method(http_method, "GET", || Route::DeviceConnect(d))
        }
        ["v1", "device", d, "pair"] => {
            let d = id(d)?;
            method(http_method, "POST", || Route::PairIssue(d))
        }
        ["v1", "device", d, "redeem"] => {
            let d = id(d)?;
            method(http_method, "POST", || Route::PairRedeem(d))
        }
        ["v1", "device", d, "tap"] => {
            let d = id(d)?;
            method(http_method, "POST", || Route::TestTap(d))
        }
        ["v1", "device", d, "phones"] => {
            let d = id(d)?;
            method(http_method, "GET", || Route::PhoneList(d))
        }
        ["v1", "device", d, "phones", p] => {
            let (d, p) = (id(d)?, id(p)?);
            method(http_method, "DELETE", || Route::PhoneRevoke(d, p))
        }
        ["v1", "device", d, "phones", p, "connect"] => {
            let (d, p) = (id(d)?, id(p)?);
            method(http_method, "GET", || Route::PhoneConnect(d, p))
        }
        _ => Err(RouteError::NotFound(path.chars().take(80).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "0123456789abcdef0123456789abcdef";
    const P: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn every_route() {
        let cases = [
            ("GET", "/".to_string(), Route::Root),
            ("GET", "/health".into(), Route::Health),
            ("GET", "/app".into(), Route::App(String::new())),
            ("GET", "/app/".into(), Route::App(String::new())),
            ("GET", "/app/sw.js".into(), Route::App("sw.js".into())),
            ("POST", "/v1/register".into(), Route::Register),
            (
                "GET",
                format!("/v1/device/{D}/connect"),
                Route::DeviceConnect(D.into()),
            ),
            (
                "POST",
                format!("/v1/device/{D}/pair"),
                Route::PairIssue(D.into()),
            ),
            (
                "POST",
                format!("/v1/device/{D}/redeem"),
                Route::PairRedeem(D.into()),
            ),
            (
                "GET",
                format!("/v1/device/{D}/phones"),
                Route::PhoneList(D.into()),
            ),
            (
                "DELETE",
                format!("/v1/device/{D}/phones/{P}"),
                Route::PhoneRevoke(D.into(), P.into()),
            ),
            (
                "GET",
                format!("/v1/device/{D}/phones/{P}/connect"),
                Route::PhoneConnect(D.into(), P.into()),
            ),
            (
                "POST",
                format!("/v1/device/{D}/tap"),
                Route::TestTap(D.into()),
            ),
        ];
        for (m, p, want) in cases {
            assert_eq!(route(m, &p, None), Ok(want.clone()), "{m} {p}");
            if want.device().is_some() {
                assert_eq!(want.device(), Some(D));
            }
        }
        assert!(
            route("GET", &format!("/v1/device/{D}/connect"), None).is_ok_and(|r| r.is_websocket())
        );
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            route("GET", "/nope", None),
            Err(RouteError::NotFound(_))
        ));
        assert!(matches!(
            route("GET", "/v1/register", None),
            Err(RouteError::MethodNotAllowed { .. })
        ));
        assert_eq!(
            route("GET", "/v1/device/ABC/connect", None),
            Err(RouteError::BadId("ABC".into()))
        );
        assert!(matches!(
            route("GET", &format!("/v1/device/{D}x/connect"), None),
            Err(RouteError::BadId(_))
        ));
        for q in [
            "token=abc",
            "x=1&access_token=abc",
            "Bearer=1",
            "phone_secret=z",
        ] {
            assert_eq!(
                route("GET", &format!("/v1/device/{D}/connect"), Some(q)),
                Err(RouteError::CredentialInUrl),
                "{q}"
            );
        }
        assert_eq!(
            route("GET", &format!("/v1/device/{D}/connect"), Some("x=1")),
            Err(RouteError::UnexpectedQuery)
        );
        // Pages ignore queries.
        assert_eq!(
            route("GET", "/app", Some("v=2")),
            Ok(Route::App(String::new()))
        );
        assert_eq!(RouteError::CredentialInUrl.status(), 400);
        assert_eq!(RouteError::NotFound("x".into()).status(), 404);
    }
}
