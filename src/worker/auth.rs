//! The worker's side of authentication: answering a dispatcher's `challenge` with `auth` (the
//! proof is computed by [`crate::protocol::auth`]; the token never leaves the process).

use zeromq::DealerSendHalf;

use super::connect::send_within;
use super::session::Ctx;
use super::WorkerError;
use crate::protocol::auth::parse_nonce;
use crate::protocol::{encode, Header};

/// The `auth` answer to a challenge carrying `nonce`. A worker without a token cannot answer and
/// stops (the dispatcher acts on nothing from it); a malformed nonce is ignored (`None`).
pub(crate) fn answer(ctx: &Ctx, nonce: &str) -> Result<Option<Header>, WorkerError> {
    let Some(token) = &ctx.token else {
        return Err(WorkerError::Auth(
            "the dispatcher requires a worker token: set token_file (--token-file) to the \
             dispatcher's token file"
                .into(),
        ));
    };
    let Some(nonce) = parse_nonce(nonce) else {
        tracing::warn!(dispatcher = %ctx.link.endpoint, "malformed challenge from the dispatcher ignored");
        return Ok(None);
    };
    tracing::debug!(worker = %ctx.info.id, "answering the dispatcher's challenge");
    Ok(Some(Header::Auth {
        worker_id: ctx.info.id.clone(),
        proof: token.prove(&nonce, &ctx.info.id),
    }))
}

/// Answers a challenge that came on a control DEALER on that same socket; `Err` inside when the
/// send failed (the socket must be rebuilt).
pub(crate) async fn answer_on(
    ctx: &Ctx,
    socket: &mut DealerSendHalf,
    nonce: &str,
) -> Result<Result<(), String>, WorkerError> {
    Ok(match answer(ctx, nonce)? {
        Some(h) => send_within(socket, encode(&[], &h, vec![]), ctx.timing.silence()).await,
        None => Ok(()),
    })
}
