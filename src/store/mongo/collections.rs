//! The collections: their indexes, and the operations that several queries share.

use futures_util::TryStreamExt;
use mongodb::{
    Collection, IndexModel,
    action::Find,
    bson::{self, Bson, Document, doc},
    options::IndexOptions,
};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    docs::{MemberDoc, MessageDoc},
    errors::{is_duplicate_key, store_err},
};
use crate::store::{StoreError, StoreResult};

/// An index named `name` on `keys`.
pub fn index(keys: Document, name: &str, unique: bool) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(
            IndexOptions::builder()
                .name(name.to_owned())
                .unique(unique)
                .build(),
        )
        .build()
}

/// The indexes the queries rely on, the unique ones the invariants (one message per seq, one
/// per clientMsgId, one membership per room and user). Creating existing ones changes nothing.
pub async fn create_indexes(
    messages: &Collection<MessageDoc>,
    members: &Collection<MemberDoc>,
) -> StoreResult<()> {
    messages
        .create_indexes([
            index(doc! {"chatRoomId": 1, "createdAt": 1}, "room_time", false),
            index(doc! {"chatRoomId": 1, "seq": 1}, "room_seq", true),
            index(
                doc! {"chatRoomId": 1, "sender": 1, "clientMsgId": 1},
                "idempotency",
                true,
            ),
            // Changes by the message they apply to (`view=state` history).
            index(doc! {"chatRoomId": 1, "target": 1}, "room_target", false),
            // Messages without their changes (unread counts, the room list, `view=state`):
            // messages have no `kind`, which indexes as null.
            index(
                doc! {"chatRoomId": 1, "kind": 1, "seq": 1},
                "room_kind_seq",
                false,
            ),
        ])
        .await
        .map_err(store_err)?;
    members
        .create_indexes([
            index(doc! {"roomId": 1, "userId": 1}, "room_user", true),
            index(doc! {"userId": 1, "roomId": 1}, "user_room", false),
        ])
        .await
        .map_err(store_err)?;
    Ok(())
}

/// Inserts `doc` under `id` unless a document has that id; true if this call inserted it.
pub async fn insert_once<T: Serialize + Send + Sync>(
    collection: &Collection<T>,
    id: &str,
    doc: &T,
) -> StoreResult<bool> {
    let set_on_insert =
        bson::to_document(doc).map_err(|e| StoreError::Internal(format!("bson: {e}")))?;
    match collection
        .update_one(doc! {"_id": id}, doc! {"$setOnInsert": set_on_insert})
        .upsert(true)
        .await
    {
        Ok(r) => Ok(r.upserted_id.is_some()),
        // Two upserts of the same new document raced; the other one inserted it.
        Err(e) if is_duplicate_key(&e) => Ok(false),
        Err(e) => Err(store_err(e)),
    }
}

/// Adds to `filter` that `field` lies within the bounds that are set (`$op`, value).
pub fn within(filter: &mut Document, field: &str, bounds: [(&str, Option<Bson>); 2]) {
    let range: Document = bounds
        .into_iter()
        .filter_map(|(op, value)| Some((op.to_owned(), value?)))
        .collect();
    if !range.is_empty() {
        filter.insert(field, range);
    }
}

/// Everything a find returns.
pub async fn collect<T: DeserializeOwned + Send + Sync>(find: Find<'_, T>) -> StoreResult<Vec<T>> {
    find.await
        .map_err(store_err)?
        .try_collect()
        .await
        .map_err(store_err)
}
