//! Directory listings, streamed page by page, and rename (copy + delete).

use std::time::SystemTime;

use ferroftp_backend::{
    DirEntry, EntryStream, StorageError, StorageErrorKind, VirtualPath, is_listable_name,
};
use futures_util::StreamExt;

use crate::error::from_opendal;
use crate::{Inner, dir_meta, file_meta, keys};

/// The entries of the directory `path` (which exists): ListObjectsV2 with `/` as delimiter,
/// a page at a time as the client reads, so 100,000 objects are never held at once. Common
/// prefixes are directories; the directory's own `dir/` marker and, at the root, the hidden
/// resume state are left out.
pub(crate) async fn list(inner: &Inner, path: &VirtualPath) -> Result<EntryStream, StorageError> {
    let directory = keys::dir_path(path)?;
    let lister = inner
        .operator
        .lister(&directory)
        .await
        .map_err(|error| from_opendal(error, &format!("listing {path}")))?;
    let at_root = path.is_root();
    let listed = path.clone();
    let entries = lister.filter_map(move |entry| {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                return std::future::ready(Some(Err(from_opendal(
                    error,
                    &format!("listing {listed}"),
                ))));
            }
        };
        let relative = entry.path().strip_prefix(directory.trim_start_matches('/'));
        let name = relative.unwrap_or(entry.path()).trim_end_matches('/');
        let shown =
            if name.is_empty() || name.contains('/') || (at_root && keys::is_hidden_name(name)) {
                None
            } else if !is_listable_name(name) {
                tracing::warn!(
                    directory = %listed,
                    name = %name.escape_debug(),
                    "an object whose name holds CR or LF is left out of the listing"
                );
                None
            } else {
                let metadata = entry.metadata();
                let meta = if metadata.is_dir() {
                    dir_meta(metadata.last_modified().map(SystemTime::from))
                } else {
                    file_meta(metadata)
                };
                Some(Ok(DirEntry {
                    name: name.to_owned(),
                    meta,
                }))
            };
        std::future::ready(shown)
    });
    Ok(Box::pin(entries))
}

/// RNFR/RNTO: a server-side copy, then the delete of the original; for a directory, of
/// every object below it (at most `rename_max_objects`). Not atomic: a failure between the
/// copies and the deletes is logged with what it left behind.
pub(crate) async fn rename(
    inner: &Inner,
    from: &VirtualPath,
    to: &VirtualPath,
) -> Result<(), StorageError> {
    if from == to {
        return Ok(());
    }
    let from_object = keys::file_path(from)?;
    let to_object = keys::file_path(to)?;
    if inner.stat_file(&from_object).await?.is_some() {
        if inner.dir_exists(to).await? {
            return Err(StorageError::new(
                StorageErrorKind::IsADirectory,
                format!("renaming {from} onto directory {to}"),
            ));
        }
        inner.require_dir(&to.parent()).await?;
        return move_object(inner, &from_object, &to_object).await;
    }
    if !inner.dir_exists(from).await? {
        return Err(StorageError::new(
            StorageErrorKind::NotFound,
            format!("renaming {from}"),
        ));
    }
    if to.strip_base(from).is_some() {
        return Err(StorageError::new(
            StorageErrorKind::PermissionDenied,
            format!("renaming {from} into itself ({to})"),
        ));
    }
    if inner.stat_file(&to_object).await?.is_some() || inner.dir_exists(to).await? {
        return Err(StorageError::new(
            StorageErrorKind::AlreadyExists,
            format!("renaming {from} onto {to}"),
        ));
    }
    inner.require_dir(&to.parent()).await?;
    move_directory(inner, from, to).await
}

async fn move_object(inner: &Inner, from: &str, to: &str) -> Result<(), StorageError> {
    inner
        .operator
        .copy(from, to)
        .await
        .map_err(|error| from_opendal(error, &format!("copying {from} to {to}")))?;
    if let Err(error) = inner.operator.delete(from).await {
        tracing::error!(
            from,
            to,
            %error,
            "rename copied the object but could not remove the original: both exist now"
        );
        return Err(from_opendal(
            error,
            &format!("removing {from} after copying it to {to}"),
        ));
    }
    Ok(())
}

async fn move_directory(
    inner: &Inner,
    from: &VirtualPath,
    to: &VirtualPath,
) -> Result<(), StorageError> {
    let from_dir = keys::dir_prefix(from)?;
    let to_dir = keys::dir_prefix(to)?;
    let limit = inner.settings.rename_max_objects;
    let objects = inner
        .first_entries(&from_dir, true, limit + 1)
        .await
        .map_err(|error| from_opendal(error, &format!("listing {from}")))?;
    let mut paths: Vec<String> = objects
        .iter()
        .map(|entry| entry.path().to_owned())
        .filter(|path| path.starts_with(&from_dir))
        .collect();
    if paths.len() > limit {
        return Err(StorageError::new(
            StorageErrorKind::TooLarge,
            format!(
                "renaming {from}: more than {limit} objects below it (storage.rename_max_objects)"
            ),
        ));
    }
    if !paths.contains(&from_dir) {
        // No marker: the directory was implied by its objects. The new one gets one, so
        // that it stays visible if they are deleted later.
        paths.push(from_dir.clone());
    }
    // Copy everything first: a failure there leaves the original whole, and the copies
    // made so far are removed.
    let mut copied = Vec::with_capacity(paths.len());
    for path in &paths {
        let target = format!("{to_dir}{}", &path[from_dir.len()..]);
        let result = if path.ends_with('/') {
            inner.operator.create_dir(&target).await
        } else {
            inner.operator.copy(path, &target).await.map(drop)
        };
        if let Err(error) = result {
            let undone = inner.operator.delete_iter(copied.clone()).await;
            tracing::error!(
                %from,
                %to,
                copied = copied.len(),
                total = paths.len(),
                undone = undone.is_ok(),
                %error,
                "directory rename failed while copying; the original is whole"
            );
            return Err(from_opendal(error, &format!("copying {path} to {target}")));
        }
        copied.push(target);
    }
    if let Err(error) = inner.operator.delete_iter(paths.clone()).await {
        tracing::error!(
            %from,
            %to,
            objects = paths.len(),
            %error,
            "directory rename copied everything but could not remove all originals: \
             some objects exist under both names"
        );
        return Err(from_opendal(
            error,
            &format!("removing {from} after copying it"),
        ));
    }
    Ok(())
}
