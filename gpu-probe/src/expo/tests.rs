use super::*;

fn one(line: &str) -> Sample<'_> {
    let mut all = parse(line).expect("parses");
    assert_eq!(all.len(), 1, "one sample in {line:?}");
    all.remove(0)
}

fn err(page: &str) -> ParseError {
    parse(page).expect_err("should not parse")
}

#[test]
fn plain_and_labelled_samples() {
    let s = one("http_requests_total 1027");
    assert_eq!((s.name, s.value, s.timestamp_ms), ("http_requests_total", 1027.0, None));
    assert!(s.labels.is_empty());

    let s = one("http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000");
    assert_eq!(s.labels.get("method").as_deref(), Some("post"));
    assert_eq!(s.labels.get("code").as_deref(), Some("200"));
    assert_eq!(s.labels.get("missing"), None);
    assert_eq!(s.timestamp_ms, Some(1_395_066_363_000));
    assert_eq!(s.labels.iter().map(|(n, _)| n).collect::<Vec<_>>(), ["method", "code"]);
}

#[test]
fn colon_names_whitespace_and_trailing_commas() {
    let s = one("  vllm:num_requests_running{ model_name = \"m\" , engine=\"0\", }\t3.0  ");
    assert_eq!(s.name, "vllm:num_requests_running");
    assert_eq!(s.labels.get("engine").as_deref(), Some("0"));
    assert_eq!(s.value, 3.0);
    assert_eq!(one("a{} 1").labels.as_raw(), "");
    assert_eq!(one("a{b=\"c\"}2").value, 2.0, "no space is needed after the brace");
    assert_eq!(one(":weird:name_ 1").name, ":weird:name_");
}

#[test]
fn special_values() {
    assert!(one("x NaN").value.is_nan());
    assert_eq!(one("x +Inf").value, f64::INFINITY);
    assert_eq!(one("x -Inf").value, f64::NEG_INFINITY);
    assert_eq!(one("x 1.5e-3").value, 0.0015);
    assert_eq!(one("x -0").value, 0.0);
    assert_eq!(one("x{le=\"+Inf\"} 7").labels.get("le").as_deref(), Some("+Inf"));
}

#[test]
fn escaped_label_values() {
    let s = one(
        r#"msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9"#,
    );
    assert_eq!(s.labels.get("path").as_deref(), Some(r"C:\DIR\FILE.TXT"));
    assert_eq!(s.labels.get("error").as_deref(), Some("Cannot find file:\n\"FILE.TXT\""));
    assert!(matches!(s.labels.get("path"), Some(Cow::Owned(_))));
    let v = s.labels.value("error").unwrap();
    assert!(v.eq_str("Cannot find file:\n\"FILE.TXT\""));
    assert!(!v.eq_str("Cannot find file"));
    // Braces, commas and `=` inside a value are data, not structure.
    let s = one(r#"x{a="}{,=\"",b="ü ñ 模型"} 1"#);
    assert_eq!(s.labels.get("a").as_deref(), Some(r#"}{,=""#));
    assert_eq!(s.labels.get("b").as_deref(), Some("ü ñ 模型"));
    assert!(matches!(one(r#"x{a="plain"} 1"#).labels.get("a"), Some(Cow::Borrowed("plain"))));
}

#[test]
fn help_type_comments_and_eof() {
    let page = "# HELP go_gc_duration_seconds A summary of the GC invocation durations.\n\
                # TYPE go_gc_duration_seconds summary\n\
                # just a comment\n\
                #\n\
                \n\
                go_gc_duration_seconds{quantile=\"0.5\"} 0.0001\r\n\
                # UNIT x seconds\n\
                # EOF\n\
                this is not parsed after EOF\n";
    let items: Vec<Item<'_>> = samples(page).collect::<Result<_, _>>().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(
        items[0],
        Item::Help { name: "go_gc_duration_seconds", text: "A summary of the GC invocation durations." }
    );
    assert_eq!(items[1], Item::Type { name: "go_gc_duration_seconds", kind: MetricType::Summary });
    let Item::Sample(s) = items[2] else { panic!("expected a sample") };
    assert_eq!(s.value, 0.0001, "a CRLF line ending is accepted");
    assert_eq!(samples("# HELP vllm:x\n").next().unwrap().unwrap(), Item::Help { name: "vllm:x", text: "" });
    assert_eq!(
        samples("# TYPE a unknown\n").next().unwrap().unwrap(),
        Item::Type { name: "a", kind: MetricType::Untyped }
    );
}

#[test]
fn openmetrics_extras() {
    let s = one("foo_bucket{le=\"0.5\"} 3 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67");
    assert_eq!(s.timestamp_ms, Some(1_520_879_607_789));
    assert_eq!(one("foo_total 17.0 # {id=\"x\"} 1").timestamp_ms, None);
}

#[test]
fn histogram_family() {
    let page = "\
# HELP vllm:e2e_request_latency_seconds Histogram of end to end request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_sum{engine=\"0\",model_name=\"m\"} 12.5
vllm:e2e_request_latency_seconds_bucket{engine=\"0\",le=\"0.3\",model_name=\"m\"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"m\"} 4.0
vllm:e2e_request_latency_seconds_count{engine=\"0\",model_name=\"m\"} 4.0
";
    let all = parse(page).unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[2].labels.get("le").as_deref(), Some("+Inf"));
}

#[test]
fn malformed_lines_name_the_line_and_the_fault() {
    use ParseErrorKind::*;
    let cases: &[(&str, ParseErrorKind)] = &[
        ("1abc 1", BadMetricName),
        ("na-me 1", BadMetricName),
        ("{a=\"b\"} 1", BadMetricName),
        ("x{1a=\"b\"} 1", BadLabelName),
        ("x{,} 1", BadLabelName),
        ("x{a} 1", ExpectedEquals),
        ("x{a=b} 1", ExpectedQuote),
        ("x{a=\"b} 1", UnterminatedValue),
        ("x{a=\"b\\\"} 1", UnterminatedValue),
        ("x{a=\"b\" c=\"d\"} 1", ExpectedCommaOrBrace),
        ("x{a=\"b\"", UnterminatedLabels),
        ("x{a=\"b\",", UnterminatedLabels),
        ("x", MissingValue),
        ("x{a=\"b\"}", MissingValue),
        ("x one", BadValue),
        ("x 1,5", BadValue),
        ("x 1 soon", BadTimestamp),
        ("x 1 2 3", TrailingText),
        ("# TYPE x", BadType),
        ("# TYPE x countr", BadType),
        ("# TYPE x gauge extra", BadType),
        ("# TYPE", BadDescriptorName),
        ("# HELP 9x text", BadDescriptorName),
        ("# HELP x{a=\"b\"} text", BadDescriptorName),
    ];
    for (line, kind) in cases {
        let page = format!("ok_line 1\n# comment\n{line}\nnever_reached 1\n");
        let e = err(&page);
        assert_eq!(e, ParseError { line: 3, kind: *kind }, "for {line:?}");
    }
    assert_eq!(err("x{a=b} 1").to_string(), "line 1: expected `\"` to open a label value");
}

#[test]
fn iteration_stops_after_an_error() {
    let mut it = samples("bad{ 1\ngood 1\n");
    assert!(it.next().unwrap().is_err());
    assert!(it.next().is_none());
}

#[test]
fn empty_and_blank_pages_have_no_samples() {
    assert!(parse("").unwrap().is_empty());
    assert!(parse("\n\n   \n\t\n").unwrap().is_empty());
    assert!(parse("# only comments\n").unwrap().is_empty());
}

/// Cheap deterministic fuzzing: random bytes, and random edits of a realistic page, must
/// never panic, and every sample that parses must have a valid name and re-walkable labels.
#[test]
fn never_panics_on_arbitrary_input() {
    let seed_page = include_str!("../../tests/fixtures/vllm.txt");
    let alphabet: &[u8] = b"{}=\",\\ \t\n#:_aZ09.+-eInfNa\x00\xff\r";
    let mut rng = fastrand::Rng::with_seed(0x5eed_cafe);
    let check = |text: &str| {
        for item in samples(text) {
            if let Ok(Item::Sample(s)) = item {
                assert!(!s.name.is_empty());
                for (name, value) in s.labels.iter() {
                    assert!(!name.is_empty());
                    let _ = value.to_cow();
                }
                let _ = s.labels.get("le");
            }
        }
    };
    for _ in 0..3000 {
        let len = rng.usize(0..120);
        let bytes: Vec<u8> = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
        check(&String::from_utf8_lossy(&bytes));
    }
    for _ in 0..400 {
        let mut bytes = seed_page.as_bytes().to_vec();
        for _ in 0..rng.usize(1..12) {
            let at = rng.usize(..bytes.len());
            match rng.u8(..4) {
                0 => bytes[at] = alphabet[rng.usize(..alphabet.len())],
                1 => {
                    bytes.remove(at);
                }
                2 => bytes.insert(at, alphabet[rng.usize(..alphabet.len())]),
                _ => bytes.truncate(at),
            }
            if bytes.is_empty() {
                break;
            }
        }
        check(&String::from_utf8_lossy(&bytes));
    }
}
