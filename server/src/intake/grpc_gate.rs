//! What a gRPC Events call passes before its message is read: the API key
//! (an interceptor, which tonic runs on the headers alone), then the size
//! the message declares in its 5-byte length prefix, against the limit of
//! its method. A caller without a key, or with a message too large, is
//! answered at once: the body is neither buffered nor decoded.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use tonic::{body::Body, server::NamedService, service::Interceptor, Status};
use tower::Service;

use super::{auth::Principal, Intake};

/// Whom the authenticated key speaks for (name and tenant), for the handlers.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

/// Checks `authorization` and hands the key's principal on as a [`Caller`].
#[derive(Clone)]
pub struct ApiKeyGate {
    intake: Arc<Intake>,
}

impl ApiKeyGate {
    pub fn new(intake: Arc<Intake>) -> ApiKeyGate {
        ApiKeyGate { intake }
    }
}

impl Interceptor for ApiKeyGate {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let principal = self
            .intake
            .keys
            .authenticate(header)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        request.extensions_mut().insert(Caller(principal));
        Ok(request)
    }
}

/// The largest message of each method, and the config key that sets it.
#[derive(Debug, Clone)]
pub struct MessageLimits {
    pub default: (usize, &'static str),
    /// By method name (`PublishBatch`).
    pub methods: Vec<(&'static str, usize, &'static str)>,
}

impl MessageLimits {
    fn for_path(&self, path: &str) -> (usize, &'static str) {
        let method = path.rsplit('/').next().unwrap_or("");
        self.methods
            .iter()
            .find(|(name, ..)| *name == method)
            .map(|&(_, limit, key)| (limit, key))
            .unwrap_or(self.default)
    }
}

/// A service whose requests are refused from their length prefix when the
/// message is larger than its method allows.
#[derive(Clone)]
pub struct MessageLimit<S> {
    inner: S,
    limits: Arc<MessageLimits>,
}

impl<S> MessageLimit<S> {
    pub fn new(inner: S, limits: MessageLimits) -> MessageLimit<S> {
        MessageLimit {
            inner,
            limits: Arc::new(limits),
        }
    }
}

impl<S: NamedService> NamedService for MessageLimit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for MessageLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (limit, key) = self.limits.for_path(request.uri().path());
        // The clone is ready only after its own poll_ready; keep the one
        // that was polled.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let peeked = Peeked::read(body).await;
            match peeked.declared_len() {
                Some(len) if len > limit => Ok(Status::resource_exhausted(format!(
                    "the message is {len} bytes, more than the {limit} bytes {key} allows"
                ))
                .into_http()),
                _ => {
                    inner
                        .call(Request::from_parts(parts, peeked.into_body()))
                        .await
                }
            }
        })
    }
}

/// The first frames of a body, read until the length prefix is in; the
/// body goes on from where they stop.
struct Peeked {
    frames: VecDeque<Frame<Bytes>>,
    error: Option<Status>,
    rest: Option<Body>,
}

/// Compressed-flag byte plus a big-endian u32 length.
const PREFIX_LEN: usize = 5;

impl Peeked {
    async fn read(mut body: Body) -> Peeked {
        let mut frames = VecDeque::new();
        let mut data = 0;
        while data < PREFIX_LEN {
            match body.frame().await {
                Some(Ok(frame)) => {
                    data += frame.data_ref().map_or(0, Bytes::len);
                    frames.push_back(frame);
                }
                Some(Err(error)) => {
                    return Peeked {
                        frames,
                        error: Some(error),
                        rest: None,
                    }
                }
                None => {
                    return Peeked {
                        frames,
                        error: None,
                        rest: None,
                    }
                }
            }
        }
        Peeked {
            frames,
            error: None,
            rest: Some(body),
        }
    }

    /// The length the first message declares, once five bytes are in.
    fn declared_len(&self) -> Option<usize> {
        let mut prefix = [0u8; PREFIX_LEN];
        let mut filled = 0;
        for data in self.frames.iter().filter_map(Frame::data_ref) {
            let take = (PREFIX_LEN - filled).min(data.len());
            prefix[filled..filled + take].copy_from_slice(&data[..take]);
            filled += take;
            if filled == PREFIX_LEN {
                let mut len = &prefix[1..];
                return usize::try_from(len.get_u32()).ok();
            }
        }
        None
    }

    fn into_body(self) -> Body {
        Body::new(self)
    }
}

impl hyper::body::Body for Peeked {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(error) = self.error.take() {
            return Poll::Ready(Some(Err(error)));
        }
        match &mut self.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
            && self.error.is_none()
            && self.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: usize = self
            .frames
            .iter()
            .filter_map(Frame::data_ref)
            .map(Bytes::len)
            .sum();
        let mut hint = self
            .rest
            .as_ref()
            .map(|r| r.size_hint())
            .unwrap_or_default();
        let buffered = buffered as u64;
        hint.set_lower(hint.lower() + buffered);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + buffered);
        }
        hint
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> Body {
        let stream = futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok::<_, Status>(Frame::data(Bytes::from_static(p))))
                .collect::<Vec<_>>(),
        );
        Body::new(http_body_util::StreamBody::new(stream))
    }

    #[tokio::test]
    async fn the_prefix_is_read_across_frames_and_the_body_is_replayed_whole() {
        let peeked = Peeked::read(chunks(&[b"\0\0", b"\0\x01", b"\x00abc", b"def"])).await;
        assert_eq!(peeked.declared_len(), Some(256));
        let body = peeked.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"\0\0\0\x01\x00abcdef");
    }

    #[tokio::test]
    async fn a_body_shorter_than_the_prefix_declares_nothing() {
        let peeked = Peeked::read(chunks(&[b"\0\0"])).await;
        assert_eq!(peeked.declared_len(), None);
        let body = peeked.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"\0\0");
    }

    #[test]
    fn each_method_gets_its_limit() {
        let limits = MessageLimits {
            default: (10, "http.body_limit"),
            methods: vec![("PublishBatch", 100, "http.batch_body_limit")],
        };
        assert_eq!(
            limits.for_path("/hookyard.v1.Events/PublishBatch"),
            (100, "http.batch_body_limit")
        );
        assert_eq!(
            limits.for_path("/hookyard.v1.Events/Publish"),
            (10, "http.body_limit")
        );
    }
}
