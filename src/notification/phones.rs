//! MSNP5's phone numbers: `PRP` sets or clears one of the user's, and watchers who may see
//! them and are online get `BPR` (clients of MSNP2-4 get nothing: the encoder writes no BPR
//! in their dialects).

use crate::connection::Replies;
use crate::protocol::{ErrorCode, FriendlyName, PhoneKey, ServerCommand, TrId, UserHandle};
use crate::services::Services;

/// `PRP TrID key [value]`.
pub async fn set(
    services: &Services,
    me: &UserHandle,
    trid: TrId,
    key: PhoneKey,
    value: Option<FriendlyName>,
    out: &mut Replies,
) -> Result<(), ErrorCode> {
    if key == PhoneKey::MobileEnabled {
        // Whether a mobile device is set up is the server's to say.
        return Err(ErrorCode::NotExpected);
    }
    let valid = match (key, &value) {
        (PhoneKey::MobileAllowed, Some(v)) => matches!(v.as_str(), "Y" | "N"),
        _ => true,
    };
    if !valid {
        return Err(ErrorCode::InvalidParameter);
    }
    let change = services.store.set_phone(me, key, value.as_ref()).await?;
    out.push(ServerCommand::Prp {
        trid,
        serial: change.serial,
        key,
        value: value.clone(),
    });
    // Watchers who may see the user, online in MSNP5 or later, learn the change.
    for (watcher, serial) in change.watchers {
        services.hub.send(
            &watcher,
            &ServerCommand::Bpr {
                serial,
                handle: me.clone(),
                key,
                value: value.clone(),
            },
        );
    }
    Ok(())
}
