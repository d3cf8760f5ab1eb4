//! A final round's Merkle tree in Redis, beside its counters (see `bandvote_core::merkle`): each
//! level as one string of 32-byte hashes (`votes:round:<id>:merkle:<level>`), the vote ids in a
//! sorted set whose members all score 0, so that `ZRANK` is a vote's index in the bytewise order of
//! the leaves (`votes:round:<id>:merkle:ids`), and `votes:round:<id>:merkle` = `{size, levels,
//! root}`, written last: a tree is there once that hash is. A proof is one `ZRANK` and one
//! `GETRANGE` per level, whatever the round's size.

use bandvote_core::merkle::{Hash, Lookup, Proof, Tree, path_positions};
use redis::aio::ConnectionLike;

use crate::keys::ROUND_PREFIX;

/// Members per `ZADD` when the ids are written.
const CHUNK: usize = 10_000;

/// Seconds a consumer's copy of a tree lives if it dies before renaming it into place.
const COPY_TTL: u64 = 3600;

fn meta_key(id: &str) -> String {
    format!("{ROUND_PREFIX}{id}:merkle")
}

fn level_key(id: &str, level: usize) -> String {
    format!("{ROUND_PREFIX}{id}:merkle:{level}")
}

fn ids_key(id: &str) -> String {
    format!("{ROUND_PREFIX}{id}:merkle:ids")
}

/// Stores round `id`'s tree, whose leaves are the votes `ids` (in the leaves' order). Several
/// consumers may store the same tree at once: each writes its own copy under keys of its own, then
/// renames them into place in one transaction, so that a reader sees one whole tree or the other
/// (and nothing is written when the tree stored already has this root).
pub async fn store(redis: &mut impl ConnectionLike, id: &str, tree: &Tree, ids: &[String]) -> redis::RedisResult<()> {
    let root = bandvote_core::merkle::hex(&tree.root());
    if stored_root(redis, id).await?.as_deref() == Some(root.as_str()) {
        return Ok(());
    }
    let copy = format!("{id}:{}", uuid::Uuid::new_v4().simple());
    let levels = tree.levels().len();
    for (level, hashes) in tree.levels().iter().enumerate() {
        let bytes: Vec<u8> = hashes.iter().flatten().copied().collect();
        redis::cmd("SET")
            .arg(level_key(&copy, level))
            .arg(bytes)
            .arg("EX")
            .arg(COPY_TTL)
            .query_async::<()>(redis)
            .await?;
    }
    for chunk in ids.chunks(CHUNK) {
        let mut add = redis::cmd("ZADD");
        add.arg(ids_key(&copy));
        for vote in chunk {
            add.arg(0).arg(vote);
        }
        add.query_async::<()>(redis).await?;
        redis::cmd("EXPIRE").arg(ids_key(&copy)).arg(COPY_TTL).query_async::<()>(redis).await?;
    }
    let mut swap = redis::pipe();
    swap.atomic().del(meta_key(id)).ignore();
    for level in 0..levels {
        swap.rename(level_key(&copy, level), level_key(id, level)).ignore().persist(level_key(id, level)).ignore();
    }
    if ids.is_empty() {
        swap.del(ids_key(id)).ignore();
    } else {
        swap.rename(ids_key(&copy), ids_key(id)).ignore().persist(ids_key(id)).ignore();
    }
    swap.hset_multiple(
        meta_key(id),
        &[("size", tree.size().to_string()), ("levels", levels.to_string()), ("root", root)],
    )
    .ignore();
    swap.query_async(redis).await
}

/// The root of round `id`'s stored tree, if one is stored.
pub async fn stored_root(redis: &mut impl ConnectionLike, id: &str) -> redis::RedisResult<Option<String>> {
    redis::cmd("HGET").arg(meta_key(id)).arg("root").query_async(redis).await
}

/// What round `id`'s stored tree says of vote `vote`: its proof, or that it is not a leaf, or that no
/// tree is stored.
pub async fn proof(redis: &mut impl ConnectionLike, id: &str, vote: &str) -> redis::RedisResult<Lookup> {
    let (index, size, root): (Option<u64>, Option<u64>, Option<String>) = redis::pipe()
        .cmd("ZRANK")
        .arg(ids_key(id))
        .arg(vote)
        .cmd("HGET")
        .arg(meta_key(id))
        .arg("size")
        .cmd("HGET")
        .arg(meta_key(id))
        .arg("root")
        .query_async(redis)
        .await?;
    let (Some(size), Some(root)) = (size, root) else { return Ok(Lookup::NoTree) };
    let Some(index) = index else { return Ok(Lookup::NotALeaf) };
    let Some(positions) = path_positions(size, index) else { return Ok(Lookup::NotALeaf) };
    let mut read = redis::pipe();
    for (level, i) in &positions {
        let start = i * 32;
        read.cmd("GETRANGE").arg(level_key(id, *level)).arg(start).arg(start + 31);
    }
    let nodes: Vec<Vec<u8>> = if positions.is_empty() { Vec::new() } else { read.query_async(redis).await? };
    let path: Option<Vec<Hash>> = nodes.into_iter().map(|node| Hash::try_from(node.as_slice()).ok()).collect();
    let Some(path) = path else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "a stored tree level is cut short",
        )));
    };
    Ok(Lookup::Found(Proof { index, size, path, root }))
}
