//! Requests and notifications that reach a node, and how to answer them.

use dms_core::Multipart;
use dms_core::PeerId;
use dms_core::path::ServicePath;
use dms_core::proto::RequestId;
use dms_core::proto::control::{Reason, codes};
use tokio::sync::mpsc;

use crate::RequestError;
use crate::driver::Command;

/// A request or notification from another instance.
#[derive(Debug)]
pub struct IncomingRequest {
    pub(crate) from: ServicePath,
    pub(crate) body: Multipart,
    pub(crate) kind: Kind,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Request(Responder),
    Notification { broadcast: bool },
}

/// Answers one request. Dropping it unanswered sends an error reply (`NO_HANDLER`), so a
/// requester never waits for a reply that will not come.
#[derive(Debug)]
pub(crate) struct Responder {
    pub(crate) peer: PeerId,
    pub(crate) id: RequestId,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) answered: bool,
}

impl Responder {
    async fn answer(mut self, result: Result<Multipart, Reason>) -> Result<(), RequestError> {
        self.answered = true;
        let command = Command::Reply {
            peer: self.peer.clone(),
            id: self.id,
            result,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| RequestError::Closed)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.commands.try_send(Command::Reply {
                peer: self.peer.clone(),
                id: self.id,
                result: Err(Reason {
                    code: codes::NO_HANDLER,
                    detail: "request dropped without a reply".into(),
                }),
            });
        }
    }
}

impl IncomingRequest {
    /// The sender's service path.
    pub fn from(&self) -> &ServicePath {
        &self.from
    }

    /// The payload frames.
    pub fn body(&self) -> &Multipart {
        &self.body
    }

    /// Whether the sender waits for a reply.
    pub fn expects_reply(&self) -> bool {
        matches!(self.kind, Kind::Request(_))
    }

    /// Whether this is one copy of a broadcast to the cluster.
    pub fn is_broadcast(&self) -> bool {
        matches!(self.kind, Kind::Notification { broadcast: true })
    }

    /// Answers the request with `body` (does nothing for a notification).
    pub async fn reply(self, body: Multipart) -> Result<(), RequestError> {
        match self.kind {
            Kind::Request(responder) => responder.answer(Ok(body)).await,
            Kind::Notification { .. } => Ok(()),
        }
    }

    /// Answers the request with an error the requester sees as `RequestError::Remote`.
    pub async fn reply_error(
        self,
        code: u16,
        detail: impl Into<String>,
    ) -> Result<(), RequestError> {
        match self.kind {
            Kind::Request(responder) => {
                responder
                    .answer(Err(Reason {
                        code,
                        detail: detail.into(),
                    }))
                    .await
            }
            Kind::Notification { .. } => Ok(()),
        }
    }
}
