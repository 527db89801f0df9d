//! [`forward_to_links!`](crate::forward_to_links): the methods of `MessageMiddleware` that
//! every stream transport forwards unchanged to its [`LinkSet`](crate::LinkSet), written
//! once.

/// Implements `try_send`, `try_send_on`, `try_send_urgent`, `try_send_urgent_on`, `send`,
/// `recv`, `recv_many`, `pause_reading` and `disconnect_link` of
/// [`MessageMiddleware`](dms_core::MessageMiddleware) as forwards to the transport's
/// [`LinkSet`](crate::LinkSet). Use it inside the transport's
/// `impl MessageMiddleware`, naming a method of the transport that returns its
/// `&LinkSet`; the transport writes `scheme`, `bind`, `connect`, `close` and `disconnect`
/// itself.
///
/// ```
/// use std::sync::Arc;
/// use dms_core::{Endpoint, MessageMiddleware, MiddlewareError, PeerId};
/// use dms_link::{LinkConfig, LinkSet};
///
/// struct Pipe {
///     links: Arc<LinkSet>,
/// }
///
/// impl Pipe {
///     fn links(&self) -> &LinkSet {
///         &self.links
///     }
/// }
///
/// impl MessageMiddleware for Pipe {
///     fn scheme(&self) -> &'static str {
///         "mem"
///     }
///     async fn bind(&self, endpoint: &Endpoint) -> Result<Endpoint, MiddlewareError> {
///         Ok(endpoint.clone())
///     }
///     async fn connect(&self, endpoint: &Endpoint) -> Result<PeerId, MiddlewareError> {
///         Err(MiddlewareError::UnsupportedEndpoint(endpoint.clone()))
///     }
///     fn close(&self) {
///         self.links.close();
///     }
///     async fn disconnect(&self, peer: &PeerId) -> Result<(), MiddlewareError> {
///         self.links.disconnect(peer).await
///     }
///     dms_link::forward_to_links!(links);
/// }
/// # let _ = Pipe { links: LinkSet::new(LinkConfig::default()) };
/// ```
#[macro_export]
macro_rules! forward_to_links {
    ($links:ident) => {
        fn try_send(
            &self,
            msg: $crate::__dms_core::Multipart,
        ) -> ::core::result::Result<(), $crate::__dms_core::SendError> {
            self.$links().try_send(msg)
        }

        fn try_send_on(
            &self,
            link: $crate::__dms_core::LinkId,
            msg: $crate::__dms_core::Multipart,
        ) -> ::core::result::Result<(), $crate::__dms_core::SendError> {
            self.$links().try_send_on(link, msg)
        }

        fn try_send_urgent(
            &self,
            msg: $crate::__dms_core::Multipart,
        ) -> ::core::result::Result<(), $crate::__dms_core::SendError> {
            self.$links().try_send_urgent(msg)
        }

        fn try_send_urgent_on(
            &self,
            link: $crate::__dms_core::LinkId,
            msg: $crate::__dms_core::Multipart,
        ) -> ::core::result::Result<(), $crate::__dms_core::SendError> {
            self.$links().try_send_urgent_on(link, msg)
        }

        async fn send(
            &self,
            msg: $crate::__dms_core::Multipart,
        ) -> ::core::result::Result<(), $crate::__dms_core::SendError> {
            self.$links().send(msg).await
        }

        async fn recv(
            &self,
        ) -> ::core::result::Result<$crate::__dms_core::Incoming, $crate::__dms_core::MiddlewareError>
        {
            self.$links().recv().await
        }

        async fn recv_many(
            &self,
            items: &mut ::std::vec::Vec<$crate::__dms_core::Incoming>,
            limit: usize,
        ) -> ::core::result::Result<usize, $crate::__dms_core::MiddlewareError> {
            self.$links().recv_many(items, limit).await
        }

        fn pause_reading(&self, peer: &$crate::__dms_core::PeerId, paused: bool) {
            self.$links().pause_reading(peer, paused);
        }

        async fn disconnect_link(
            &self,
            peer: &$crate::__dms_core::PeerId,
            link: $crate::__dms_core::LinkId,
        ) -> ::core::result::Result<(), $crate::__dms_core::MiddlewareError> {
            self.$links().disconnect_link(peer, link).await
        }
    };
}
