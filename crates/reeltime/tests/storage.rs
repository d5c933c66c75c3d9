//! Media storage against real servers: one contract run on the local disk
//! and on S3 (moto's standalone server from PyPI, started by the test kit),
//! and the real binary serving S3 objects through signed `/media` links.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::binary;
use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;
use reeltime::media::storage::UPLOAD_PART_SIZE;
use reeltime::media::{
    LocalStorage, MediaSigner, MediaStorage, ObjectStorage, StorageError, publish_import,
};
use reeltime_protocol::ImportStatus;
use reeltime_testkit::services::{S3_ACCESS_KEY_ID, S3_REGION, S3_SECRET_ACCESS_KEY, S3Server};
use reeltime_testkit::{Api, ContentServer, ServerProcess, TestIssuer, WsClient};

/// Bytes that differ at every offset a test reads, so a wrong range shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_add(seed))
        .collect()
}

async fn read(
    storage: &dyn MediaStorage,
    id: &str,
    file: &str,
    range: Option<(u64, u64)>,
) -> Vec<u8> {
    storage
        .open(id, file, range)
        .await
        .unwrap_or_else(|err| panic!("open {id}/{file} {range:?}: {err}"))
        .bytes()
        .await
        .expect("read body")
}

fn s3_storage(server: &S3Server, prefix: &str) -> ObjectStorage {
    ObjectStorage::new(
        &server.media_url(prefix),
        Some(&server.endpoint()),
        server.env(),
    )
    .expect("object storage over the test server")
}

/// What every storage must do, whatever is behind it.
async fn contract(storage: &dyn MediaStorage, scratch: &Path) {
    let id = "0190c3d2-7e1f-7cc4-a8b1-5b4c5d6e7f80";
    let video = pattern(300_000, 1);
    let local = scratch.join("video.mp4");
    std::fs::write(&local, &video).expect("write");
    storage
        .put_file(id, "video.mp4", &local)
        .await
        .expect("put video");
    let poster = scratch.join("poster.jpg");
    std::fs::write(&poster, b"\xFF\xD8poster").expect("write");
    storage
        .put_file(id, "poster.jpg", &poster)
        .await
        .expect("put poster");

    // Size, whole, and ranged reads (inclusive ends, as in HTTP).
    let len = video.len() as u64;
    assert_eq!(storage.size(id, "video.mp4").await.expect("size"), len);
    let whole = storage.open(id, "video.mp4", None).await.expect("open");
    assert_eq!((whole.total_len, whole.start, whole.len), (len, 0, len));
    assert_eq!(whole.bytes().await.expect("body"), video);
    let part = storage
        .open(id, "video.mp4", Some((100, 199)))
        .await
        .expect("open range");
    assert_eq!((part.total_len, part.start, part.len), (len, 100, 100));
    assert_eq!(part.bytes().await.expect("body"), &video[100..200]);
    assert_eq!(
        read(storage, id, "video.mp4", Some((len - 10, u64::MAX))).await,
        &video[video.len() - 10..]
    );
    assert_eq!(
        read(storage, id, "video.mp4", Some((299_990, len + 1_000))).await,
        &video[299_990..],
        "an end past the file is cut to the file"
    );
    assert_eq!(
        read(storage, id, "video.mp4", Some((0, 0))).await,
        &video[..1]
    );
    for beyond in [(len, len + 5), (len + 100, u64::MAX)] {
        match storage.open(id, "video.mp4", Some(beyond)).await {
            Err(StorageError::RangeNotSatisfiable { len: reported }) => assert_eq!(reported, len),
            other => panic!("range {beyond:?}: expected RangeNotSatisfiable, got {other:?}"),
        }
    }
    assert_eq!(
        read(storage, id, "poster.jpg", None).await,
        b"\xFF\xD8poster"
    );

    // Missing files, and a missing local source.
    assert!(matches!(
        storage.open(id, "missing.mp4", None).await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        storage.size("no-such-import", "video.mp4").await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        storage
            .put_file(id, "other.mp4", &scratch.join("nowhere.mp4"))
            .await,
        Err(StorageError::NotFound)
    ));

    // Putting again replaces the file.
    let replaced = pattern(1_000, 7);
    std::fs::write(&local, &replaced).expect("write");
    storage
        .put_file(id, "video.mp4", &local)
        .await
        .expect("put again");
    assert_eq!(read(storage, id, "video.mp4", None).await, replaced);

    // A file larger than one upload part: a multipart upload on S3. Read
    // across the part boundary.
    let big = pattern(UPLOAD_PART_SIZE * 2 + 12_345, 3);
    let big_path = scratch.join("big.mp4");
    std::fs::write(&big_path, &big).expect("write");
    storage
        .put_file(id, "big.mp4", &big_path)
        .await
        .expect("put big");
    assert_eq!(
        storage.size(id, "big.mp4").await.expect("size"),
        big.len() as u64
    );
    let boundary = UPLOAD_PART_SIZE as u64;
    assert_eq!(
        read(storage, id, "big.mp4", Some((boundary - 50, boundary + 49))).await,
        &big[UPLOAD_PART_SIZE - 50..UPLOAD_PART_SIZE + 50]
    );
    assert_eq!(read(storage, id, "big.mp4", None).await, big);

    // Deleting an import removes all its files and nothing of a neighbour
    // whose id starts the same.
    let neighbour = format!("{id}0");
    storage
        .put_file(&neighbour, "poster.jpg", &poster)
        .await
        .expect("put neighbour");
    storage.delete_import(id).await.expect("delete");
    for file in ["video.mp4", "poster.jpg", "big.mp4"] {
        assert!(
            matches!(
                storage.open(id, file, None).await,
                Err(StorageError::NotFound)
            ),
            "{file} survived the delete"
        );
    }
    assert_eq!(
        read(storage, &neighbour, "poster.jpg", None).await,
        b"\xFF\xD8poster"
    );
    storage
        .delete_import(id)
        .await
        .expect("deleting twice is fine");
    storage
        .delete_import("never-existed")
        .await
        .expect("deleting nothing is fine");

    // Path safety: only plain names, on every operation.
    for (bad_id, bad_file) in [
        ("..", "video.mp4"),
        (id, ".."),
        (id, "../video.mp4"),
        (id, "a/b.mp4"),
        ("a/b", "video.mp4"),
        (id, "/etc/passwd"),
        (id, ".video.mp4.part"),
        ("", "video.mp4"),
        (id, ""),
        (id, "a\\b"),
        (id, "%2e%2e"),
    ] {
        let refused = |result: Result<(), StorageError>, op: &str| {
            assert!(
                matches!(result, Err(StorageError::InvalidName)),
                "{op} {bad_id:?}/{bad_file:?}: {result:?}"
            );
        };
        refused(
            storage.put_file(bad_id, bad_file, &poster).await,
            "put_file",
        );
        refused(storage.open(bad_id, bad_file, None).await.map(drop), "open");
        refused(storage.size(bad_id, bad_file).await.map(drop), "size");
    }
    for bad_id in ["..", "a/b", "", "/"] {
        assert!(
            matches!(
                storage.delete_import(bad_id).await,
                Err(StorageError::InvalidName)
            ),
            "delete_import {bad_id:?}"
        );
    }
    assert_eq!(
        read(storage, &neighbour, "poster.jpg", None).await,
        b"\xFF\xD8poster",
        "refused operations touched nothing"
    );
}

#[tokio::test]
async fn local_storage_keeps_the_contract() {
    let root = tempfile::tempdir().expect("temp dir");
    let scratch = tempfile::tempdir().expect("temp dir");
    let storage = LocalStorage::new(root.path().join("imports"));
    contract(&storage, scratch.path()).await;
}

#[tokio::test]
async fn object_storage_keeps_the_contract_on_real_s3() {
    let server = S3Server::start().await;
    let scratch = tempfile::tempdir().expect("temp dir");
    let storage = s3_storage(&server, "reeltime/test");
    contract(&storage, scratch.path()).await;

    // The objects are where the layout says, under the prefix, typed.
    let id = "imp-layout";
    let file = scratch.path().join("poster.jpg");
    std::fs::write(&file, b"jpeg").expect("write");
    storage
        .put_file(id, "poster.jpg", &file)
        .await
        .expect("put");
    // Read back with a plain S3 client, not through ObjectStorage.
    let raw = AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_bucket_name(server.bucket())
        .with_access_key_id(S3_ACCESS_KEY_ID)
        .with_secret_access_key(S3_SECRET_ACCESS_KEY)
        .with_region(S3_REGION)
        .build()
        .expect("plain client");
    let object = raw
        .get(&object_store::path::Path::from(format!(
            "reeltime/test/{id}/poster.jpg"
        )))
        .await
        .expect("the object is under the prefix");
    assert_eq!(
        object
            .attributes
            .get(&object_store::Attribute::ContentType)
            .map(|value| value.as_ref()),
        Some("image/jpeg")
    );
    assert_eq!(object.bytes().await.expect("body").as_ref(), b"jpeg");

    // Another prefix in the same bucket is another storage.
    let other = s3_storage(&server, "elsewhere");
    assert!(matches!(
        other.size(id, "poster.jpg").await,
        Err(StorageError::NotFound)
    ));
}

#[tokio::test]
async fn local_put_is_a_no_op_for_a_file_already_in_place() {
    let root = tempfile::tempdir().expect("temp dir");
    let storage = LocalStorage::new(root.path().to_path_buf());
    let dir = root.path().join("imp1");
    std::fs::create_dir(&dir).expect("mkdir");
    let in_place = dir.join("video.mp4");
    std::fs::write(&in_place, b"video").expect("write");
    let before = std::fs::metadata(&in_place).expect("meta").modified().ok();
    storage
        .put_file("imp1", "video.mp4", &in_place)
        .await
        .expect("put in place");
    assert_eq!(std::fs::read(&in_place).expect("read"), b"video");
    assert_eq!(
        std::fs::metadata(&in_place).expect("meta").modified().ok(),
        before
    );
    // No partial file is left behind by a copy either.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let source = elsewhere.path().join("poster.jpg");
    std::fs::write(&source, b"jpeg").expect("write");
    storage
        .put_file("imp1", "poster.jpg", &source)
        .await
        .expect("copy in");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["poster.jpg", "video.mp4"]);
}

#[tokio::test]
async fn local_storage_never_follows_a_symlink_out_of_the_root() {
    let outside = tempfile::tempdir().expect("temp dir");
    std::fs::write(outside.path().join("secret.mp4"), b"secret").expect("write");
    let root = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(root.path().join("imp1")).expect("mkdir");
    std::os::unix::fs::symlink(
        outside.path().join("secret.mp4"),
        root.path().join("imp1/escape.mp4"),
    )
    .expect("symlink");
    std::os::unix::fs::symlink(outside.path(), root.path().join("linked")).expect("symlink");
    let storage = LocalStorage::new(root.path().to_path_buf());
    for (id, file) in [("imp1", "escape.mp4"), ("linked", "secret.mp4")] {
        assert!(
            matches!(
                storage.open(id, file, None).await,
                Err(StorageError::NotFound)
            ),
            "{id}/{file}"
        );
        assert!(matches!(
            storage.size(id, file).await,
            Err(StorageError::NotFound)
        ));
    }
    // Deleting the linked "import" removes the link, not what it points to.
    storage.delete_import("linked").await.expect("delete");
    assert!(outside.path().join("secret.mp4").exists());
}

#[tokio::test]
async fn publish_import_moves_files_to_remote_storage_and_keeps_them_locally_otherwise() {
    let server = S3Server::start().await;
    // The endpoint from AWS_ENDPOINT_URL this time, not the override.
    let remote = ObjectStorage::new(&server.media_url(""), None, server.env()).expect("settings");
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path().join("imp-pub");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("video.mp4"), b"video").expect("write");
    std::fs::write(dir.join("poster.jpg"), b"jpeg").expect("write");
    publish_import(&remote, "imp-pub", &dir, &["video.mp4", "poster.jpg"])
        .await
        .expect("publish");
    assert_eq!(read(&remote, "imp-pub", "video.mp4", None).await, b"video");
    assert_eq!(read(&remote, "imp-pub", "poster.jpg", None).await, b"jpeg");
    assert!(!dir.exists(), "local copies and the emptied dir are gone");

    let local = LocalStorage::new(scratch.path().to_path_buf());
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("video.mp4"), b"video").expect("write");
    publish_import(&local, "imp-pub", &dir, &["video.mp4"])
        .await
        .expect("publish locally");
    assert_eq!(
        std::fs::read(dir.join("video.mp4")).expect("kept"),
        b"video"
    );
}

#[tokio::test]
async fn object_storage_reports_an_unreachable_server() {
    // A port nothing listens on: an error, never a hang.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("port")
        .port();
    let storage = ObjectStorage::new(
        "s3://nowhere/x",
        Some(&format!("http://127.0.0.1:{port}")),
        [
            ("AWS_ACCESS_KEY_ID".to_string(), "k".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "s".to_string()),
        ],
    )
    .expect("settings");
    let outcome = tokio::time::timeout(Duration::from_secs(60), storage.size("imp", "a.mp4"))
        .await
        .expect("an answer in time");
    assert!(
        matches!(outcome, Err(StorageError::Object(_))),
        "{outcome:?}"
    );
}

/// The real binary with `REELTIME_MEDIA_URL=s3://...` serves an object put
/// into the bucket through signed links: whole, ranged, and refused.
#[tokio::test]
async fn the_server_serves_media_from_s3() {
    let s3 = S3Server::start().await;
    let issuer = TestIssuer::start().await;
    let content = ContentServer::start().await;
    let mut env = issuer.env();
    env.extend(common::pairs(&[
        ("REELTIME_IMPORT_ALLOW_PRIVATE", "1"),
        ("REELTIME_MEDIA_PROCESSING", "off"),
        ("REELTIME_MEDIA_URL", &s3.media_url("served")),
        ("REELTIME_S3_ENDPOINT", &s3.endpoint()),
    ]));
    env.extend(
        s3.env()
            .into_iter()
            .filter(|(key, _)| key != "AWS_ENDPOINT_URL"),
    );
    let server = ServerProcess::start(binary(), &env).await;
    let api = Api::new(&server.http());

    // An import of Alice's, so that the server knows its owner.
    let token = issuer.token("alice", 600);
    let (mut ws, _ready, _snapshot) = WsClient::open(&server.ws(), &token).await;
    let created = api
        .create_ok(&token, &content.video_url("clip.mp4", 10_000))
        .await;
    let done = common::follow_to_final(&mut ws, &created.id).await;
    assert_eq!(
        done.last().map(|import| import.status),
        Some(ImportStatus::Completed)
    );

    // The object goes straight into the bucket: another node's upload.
    let storage = s3_storage(&s3, "served");
    let video = pattern(200_000, 5);
    let scratch = tempfile::tempdir().expect("temp dir");
    let local = scratch.path().join("video.mp4");
    std::fs::write(&local, &video).expect("write");
    storage
        .put_file(&created.id, "video.mp4", &local)
        .await
        .expect("upload");

    let signer = MediaSigner::load_or_create(server.data_dir(), None).expect("media secret");
    let signer = Arc::new(signer);
    let link = signer.sign(&created.id, "video.mp4", "alice", Duration::from_secs(60));
    let http = reqwest::Client::new();
    let url = format!("{}{link}", server.http());

    let whole = http.get(&url).send().await.expect("GET");
    assert_eq!(whole.status(), 200, "log:\n{}", server.log());
    assert_eq!(whole.headers()["content-type"], "video/mp4");
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.headers()["content-length"], "200000");
    assert_eq!(
        whole.bytes().await.expect("body").as_ref(),
        video.as_slice()
    );

    let ranged = http
        .get(&url)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .expect("GET range");
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.headers()["content-range"], "bytes 1000-1999/200000");
    assert_eq!(ranged.headers()["content-length"], "1000");
    assert_eq!(
        ranged.bytes().await.expect("body").as_ref(),
        &video[1000..2000]
    );

    let tail = http
        .get(&url)
        .header("range", "bytes=-100")
        .send()
        .await
        .expect("GET suffix");
    assert_eq!(tail.status(), 206);
    assert_eq!(
        tail.headers()["content-range"],
        "bytes 199900-199999/200000"
    );
    assert_eq!(
        tail.bytes().await.expect("body").as_ref(),
        &video[199_900..]
    );

    let beyond = http
        .get(&url)
        .header("range", "bytes=200000-")
        .send()
        .await
        .expect("GET past the end");
    assert_eq!(beyond.status(), 416);
    assert_eq!(beyond.headers()["content-range"], "bytes */200000");

    // A tampered signature, another user's link, and a file not there.
    let tampered = if url.ends_with('A') {
        format!("{}B", &url[..url.len() - 1])
    } else {
        format!("{}A", &url[..url.len() - 1])
    };
    assert_eq!(http.get(&tampered).send().await.expect("GET").status(), 403);
    let bobs = signer.sign(&created.id, "video.mp4", "bob", Duration::from_secs(60));
    let refused = http
        .get(format!("{}{bobs}", server.http()))
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status(), 403);
    let missing = signer.sign(&created.id, "gone.mp4", "alice", Duration::from_secs(60));
    let missing = http
        .get(format!("{}{missing}", server.http()))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
}
