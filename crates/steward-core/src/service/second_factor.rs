//! TOTP second factors (RFC 6238; maths in [`crate::totp`]): seeds sealed under the data key and
//! bound to their user, set-up, confirmation and verification with each time step consumed once in
//! the store (so a code works once, also across replicas).

use std::sync::Arc;

use steward_pki::Kek;

use super::{Clock, ServiceError, ServiceResult};
use crate::console::{ConsoleUser, UserTotp};
use crate::model::UserId;
use crate::store::Store;
use crate::totp::TotpSecret;

fn label(user: UserId) -> String {
    format!("totp:{user}")
}

#[derive(Clone)]
pub struct SecondFactor {
    store: Arc<dyn Store>,
    data_key: Arc<Kek>,
    clock: Arc<dyn Clock>,
}

/// The outcome of a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    Accepted,
    /// Wrong, or already used.
    Refused,
}

impl SecondFactor {
    pub fn new(store: Arc<dyn Store>, data_key: Arc<Kek>, clock: Arc<dyn Clock>) -> Self {
        Self { store, data_key, clock }
    }

    /// Opens a stored seed; an error (logged) if it cannot be opened: wrong data key after a
    /// restore, or a row edited by hand.
    pub fn open(&self, user: UserId, t: &UserTotp) -> ServiceResult<TotpSecret> {
        let unreadable = || ServiceError::Internal("the stored second factor cannot be read".into());
        let bytes = self.data_key.open(&label(user), &t.sealed_secret).map_err(|e| {
            tracing::error!(%user, error = %e, "cannot open the TOTP seed");
            unreadable()
        })?;
        TotpSecret::from_bytes(&bytes).map_err(|e| {
            tracing::error!(%user, error = %e, "the stored TOTP seed is unusable");
            unreadable()
        })
    }

    /// The seed being set up for `user`: the unconfirmed one already stored, or a new one (stored
    /// unconfirmed, replacing any).
    pub async fn setup_secret(&self, user: &ConsoleUser) -> ServiceResult<TotpSecret> {
        if let Some(t) = user.totp.as_ref().filter(|t| !t.confirmed()) {
            return self.open(user.user.id, t);
        }
        self.new_secret(user.user.id).await
    }

    /// A fresh seed for `user`, stored unconfirmed (replacing any, confirmed or not).
    pub async fn new_secret(&self, user: UserId) -> ServiceResult<TotpSecret> {
        let secret =
            TotpSecret::generate().map_err(|_| ServiceError::Internal("system random generator failed".into()))?;
        let sealed = self
            .data_key
            .seal(&label(user), secret.as_bytes())
            .map_err(|e| ServiceError::Internal(format!("cannot seal a TOTP seed: {e}")))?;
        self.store.set_user_totp(user, Some(&sealed)).await?;
        Ok(secret)
    }

    /// Checks a code against the user's seed: confirms an unconfirmed seed, or consumes the time
    /// step of a confirmed one.
    pub async fn check(&self, user: UserId, totp: &UserTotp, code: &str) -> ServiceResult<CodeCheck> {
        let secret = self.open(user, totp)?;
        self.check_with(user, totp, &secret, code).await
    }

    /// As [`SecondFactor::check`] with the seed already opened.
    pub async fn check_with(
        &self,
        user: UserId,
        totp: &UserTotp,
        secret: &TotpSecret,
        code: &str,
    ) -> ServiceResult<CodeCheck> {
        let now = self.clock.now();
        let accepted = match secret.verify(code, now, totp.last_step) {
            None => false,
            Some(step) if !totp.confirmed() => self.store.confirm_user_totp(user, step, now).await?,
            Some(step) => self.store.use_totp_step(user, step).await?,
        };
        Ok(if accepted {
            CodeCheck::Accepted
        } else {
            CodeCheck::Refused
        })
    }
}
