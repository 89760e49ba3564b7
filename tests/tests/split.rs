//! Weighted canary splits and sticky routing.

use vane_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_ten_split_within_tolerance() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let proxy = Proxy::start(&split_config(&[("v1", &[v1.addr], 90), ("v2", &[v2.addr], 10)], ""));
    let client = h1_client(proxy.outbound);
    const N: usize = 4000;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut v2 = 0;
            for _ in (w..N).step_by(8) {
                let r = get(&client, "svc", "/", &[]).await.unwrap();
                assert_eq!(r.status, 200);
                if r.served_by() == "v2" {
                    v2 += 1;
                }
            }
            v2
        }));
    }
    let mut to_v2 = 0;
    for t in tasks {
        to_v2 += t.await.unwrap();
    }
    // Binomial(4000, 0.1): mean 400, sd 19. Five standard deviations either side.
    assert!((305..=495).contains(&to_v2), "v2 got {to_v2} of {N}");
    assert_eq!(v1.hits() + v2.hits(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_header_keeps_a_user_on_one_backend() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let sticky = "        sticky: { header: x-user }\n";
    let proxy = Proxy::start(&split_config(&[("v1", &[v1.addr], 50), ("v2", &[v2.addr], 50)], sticky));
    let client = h2_client(proxy.outbound);
    let mut firsts = Vec::new();
    for user in 0..40 {
        let u = format!("user-{user}");
        let first = get(&client, "svc", "/", &[("x-user", &u)]).await.unwrap().served_by().to_string();
        for _ in 0..10 {
            let again = get(&client, "svc", "/", &[("x-user", &u)]).await.unwrap();
            assert_eq!(again.served_by(), first, "{u} moved");
        }
        firsts.push(first);
    }
    // Different users still spread over both backends.
    let on_v1 = firsts.iter().filter(|f| *f == "v1").count();
    assert!((5..=35).contains(&on_v1), "{on_v1} of 40 users on v1");
}
