//! Scratch measurement (not committed).
use futures_util::TryStreamExt;
use std::time::Instant;
#[tokio::main]
async fn main() {
    let v = |n: &str| std::env::var(n).unwrap();
    let builder = opendal::services::S3::default()
        .endpoint(&v("FERROFTP_S3_ENDPOINT"))
        .region("garage")
        .bucket("ftp-test")
        .access_key_id(&v("FERROFTP_S3_ACCESS_KEY_ID"))
        .secret_access_key(&v("FERROFTP_S3_SECRET_ACCESS_KEY"))
        .disable_config_load()
        .disable_ec2_metadata();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let op = opendal::Operator::new(builder).unwrap();
    let t = opendal::HttpTransporter::new(opendal_http_transport_reqwest::ReqwestTransport::new(
        reqwest::Client::new(),
    ));
    let op = op.clone().with_context(op.context().with_http_transport(t));
    let path = std::env::args().nth(1).unwrap();
    let op = if std::env::var("LAYERS").is_ok() {
        op.layer(
            opendal::layers::RetryLayer::new()
                .with_jitter()
                .with_max_times(3),
        )
        .layer(
            opendal::layers::TimeoutLayer::new().with_timeout(std::time::Duration::from_secs(60)),
        )
    } else {
        op
    };
    if path.ends_with('/') {
        use futures_util::StreamExt;
        let start = Instant::now();
        let mut l = op.lister(&path).await.unwrap();
        let mut n = 0;
        while let Some(e) = l.next().await {
            e.unwrap();
            n += 1;
            if n % 1000 == 0 {
                println!("{n} at {:?}", start.elapsed());
            }
        }
        println!("listed {n} in {:?}", start.elapsed());
        return;
    }
    let size = op.stat(&path).await.unwrap().content_length();
    for (chunk, conc) in [
        (0usize, 1usize),
        (8 << 20, 4),
        (8 << 20, 8),
        (4 << 20, 8),
        (16 << 20, 4),
    ] {
        let start = Instant::now();
        let mut r = op.reader_with(&path);
        if chunk > 0 {
            r = r.chunk(chunk).concurrent(conc);
        }
        let mut s = r.await.unwrap().into_bytes_stream(0..size).await.unwrap();
        let mut n = 0u64;
        while let Some(b) = s.try_next().await.unwrap() {
            n += b.len() as u64;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "chunk {chunk} conc {conc}: {:.1} MB/s ({n} bytes)",
            n as f64 / secs / 1e6
        );
    }
}
