use super::*;
use std::time::Duration;

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// The next chunk; `None` at the end (whatever the ending).
async fn chunk(sub: &mut Sub) -> Option<Bytes> {
    match tokio::time::timeout(Duration::from_secs(2), sub.next()).await.expect("stalled") {
        Some(Piece::Data(c)) => Some(c),
        _ => None,
    }
}

async fn read_all(sub: &mut Sub) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Some(c) = chunk(sub).await {
        out.push(c);
    }
    out
}

#[tokio::test]
async fn a_late_joiner_reads_every_chunk_in_order_then_the_rest_live() {
    let (flight, mut leader) = Flight::new(1 << 20, 8);
    flight.set_head(Head::Ready(Arc::new((StatusCode::OK, HeaderMap::new()))));
    flight.push(b("one "));
    flight.push(b("two "));
    assert_eq!(chunk(&mut leader).await, Some(b("one ")));
    let mut late = flight.join().expect("open");
    assert!(matches!(late.head().await, Head::Ready(_)));
    let reader = tokio::spawn(async move { read_all(&mut late).await });
    flight.push(b("three "));
    tokio::task::yield_now().await;
    flight.push(b("four"));
    flight.finish(Ending::Clean(None));
    flight.settle();
    let got = reader.await.unwrap();
    assert_eq!(got, vec![b("one "), b("two "), b("three "), b("four")]);
    assert_eq!(read_all(&mut leader).await, vec![b("two "), b("three "), b("four")]);
    assert!(flight.join().is_none(), "an ended answer takes no followers");
}

#[tokio::test]
async fn past_the_cap_no_one_joins_and_read_chunks_are_dropped() {
    let (flight, mut leader) = Flight::new(10, 8);
    let mut early = flight.join().expect("open");
    assert!(!flight.push(b("12345")));
    assert!(flight.join().is_some(), "under the cap a follower joins");
    assert!(flight.push(b("67890")), "reaching the cap closes the group");
    assert!(flight.join().is_none(), "past the cap no follower joins");
    assert_eq!(flight.buffered(), 10);
    assert_eq!(chunk(&mut leader).await, Some(b("12345")));
    assert_eq!(flight.buffered(), 10, "the early follower has not read it yet");
    assert_eq!(chunk(&mut early).await, Some(b("12345")));
    assert_eq!(flight.buffered(), 5, "read by all: dropped");
    drop(early);
    assert_eq!(chunk(&mut leader).await, Some(b("67890")));
    assert_eq!(flight.buffered(), 0);
}

#[tokio::test]
async fn the_driver_waits_for_the_slowest_subscriber() {
    let (flight, mut leader) = Flight::new(8, 8);
    flight.push(b("12345678"));
    let waiting = tokio::time::timeout(Duration::from_millis(50), flight.room()).await;
    assert!(waiting.is_err(), "no room while the cap is unread");
    assert_eq!(chunk(&mut leader).await, Some(b("12345678")));
    assert!(tokio::time::timeout(Duration::from_secs(1), flight.room()).await.expect("room"));
    drop(leader);
    assert!(!flight.room().await, "no subscriber left");
    tokio::time::timeout(Duration::from_secs(1), flight.abandoned()).await.expect("abandoned");
}

#[tokio::test]
async fn full_or_failed_groups_take_no_followers() {
    let (flight, _leader) = Flight::new(100, 2);
    assert!(flight.join().is_some());
    let _second = flight.join().expect("second of two");
    assert!(flight.join().is_none(), "full");
    let (flight, _leader) = Flight::new(100, 2);
    flight.set_head(Head::Alone);
    assert!(flight.join().is_none(), "failed");
    let (flight, leader) = Flight::new(100, 2);
    drop(leader);
    assert!(flight.join().is_none(), "abandoned");
}

#[tokio::test]
async fn followers_waiting_for_the_head_see_it_when_it_comes() {
    let (flight, _leader) = Flight::new(100, 4);
    let f = flight.join().unwrap();
    let waiter = tokio::spawn(async move { f.head().await });
    tokio::task::yield_now().await;
    flight.set_head(Head::Alone);
    assert!(matches!(waiter.await.unwrap(), Head::Alone));
}

#[tokio::test]
async fn every_reader_gets_the_trailers_or_the_break_after_its_last_chunk() {
    let (flight, mut leader) = Flight::new(1 << 20, 8);
    flight.set_head(Head::Ready(Arc::new((StatusCode::OK, HeaderMap::new()))));
    let mut follower = flight.join().expect("open");
    flight.push(b("msg"));
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    flight.finish(Ending::Clean(Some(Arc::new(trailers))));
    flight.settle();
    for sub in [&mut leader, &mut follower] {
        assert!(matches!(sub.next().await, Some(Piece::Data(d)) if d == "msg"));
        let Some(Piece::Trailers(t)) = sub.next().await else { panic!("no trailers") };
        assert_eq!(t["grpc-status"], "0");
        assert!(sub.next().await.is_none(), "then nothing");
    }

    // A driver that ends without a clean end (an upstream error, a panic) breaks every body.
    let (flight, mut leader) = Flight::new(1 << 20, 8);
    flight.set_head(Head::Ready(Arc::new((StatusCode::OK, HeaderMap::new()))));
    let mut follower = flight.join().expect("open");
    flight.push(b("half"));
    flight.settle();
    for sub in [&mut leader, &mut follower] {
        assert!(matches!(sub.next().await, Some(Piece::Data(_))));
        assert!(matches!(sub.next().await, Some(Piece::Broken)));
        assert!(sub.next().await.is_none());
    }
}
