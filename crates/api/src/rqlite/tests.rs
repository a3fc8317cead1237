//! The wire format's golden tests: request shapes in, rqlite's exact bytes out.

use super::*;
use raftlite_store::types::{Params, Rows, Statement, StatementResult, Value};
use serde_json::Value as Json;
use std::collections::HashMap;

fn parse(body: &str) -> Result<Vec<Statement>, RequestError> {
    parse_statements(body.as_bytes(), Some("application/json"))
}

fn parse_err(body: &str) -> String {
    match parse(body) {
        Ok(stmts) => panic!("expected an error for {body:?}, got {stmts:?}"),
        Err(e) => e.to_string(),
    }
}

fn opts() -> ResponseOptions {
    ResponseOptions::default()
}

fn body(results: &[StatementResult], opts: &ResponseOptions) -> String {
    to_body(&encode_results(results, opts, None, None), false)
}

fn exec(last_insert_id: i64, rows_affected: u64) -> StatementResult {
    StatementResult::Execute {
        last_insert_id,
        rows_affected,
        time_secs: 0.25,
    }
}

fn foo_rows(values: Vec<Vec<Value>>) -> StatementResult {
    StatementResult::Rows(Rows {
        columns: vec!["id".into(), "name".into(), "age".into()],
        types: vec!["integer".into(), "text".into(), "integer".into()],
        values,
        time_secs: 0.5,
    })
}

fn fiona() -> Vec<Value> {
    vec![
        Value::Integer(1),
        Value::Text("fiona".into()),
        Value::Integer(20),
    ]
}

// ---- request parsing ----

#[test]
fn parses_simple_strings() {
    let stmts = parse(r#"["CREATE TABLE foo (id INTEGER)", "INSERT INTO foo VALUES(1)"]"#).unwrap();
    assert_eq!(
        stmts,
        vec![
            Statement::new("CREATE TABLE foo (id INTEGER)"),
            Statement::new("INSERT INTO foo VALUES(1)"),
        ]
    );
}

#[test]
fn parses_positional_params_of_every_type() {
    let stmts = parse(
        r#"[["INSERT INTO t VALUES(?,?,?,?,?,?,?)", 1, -7, 2.5, true, false, null, "fiona"],
                ["SELECT 1"]]"#,
    )
    .unwrap();
    assert_eq!(
        stmts,
        vec![
            Statement::with_params(
                "INSERT INTO t VALUES(?,?,?,?,?,?,?)",
                vec![
                    Value::Integer(1),
                    Value::Integer(-7),
                    Value::Real(2.5),
                    Value::Integer(1),
                    Value::Integer(0),
                    Value::Null,
                    Value::Text("fiona".into()),
                ]
            ),
            Statement::new("SELECT 1"),
        ]
    );
}

#[test]
fn parses_named_params_stripping_sigils_sorted_by_name() {
    let stmts = parse(
        r#"[["INSERT INTO foo VALUES(:name, @age, $x, :plain)",
                 {":name": "fiona", "@age": 20, "$x": null, "plain": 1.5}]]"#,
    )
    .unwrap();
    assert_eq!(
        stmts[0].params,
        Params::Named(vec![
            ("age".into(), Value::Integer(20)),
            ("name".into(), Value::Text("fiona".into())),
            ("plain".into(), Value::Real(1.5)),
            ("x".into(), Value::Null),
        ])
    );
    // Only one sigil is stripped; two maps merge.
    let stmts = parse(r#"[["SELECT ::a, :b", {"::a": 1}, {"b": 2}]]"#).unwrap();
    assert_eq!(
        stmts[0].params,
        Params::Named(vec![
            (":a".into(), Value::Integer(1)),
            ("b".into(), Value::Integer(2)),
        ])
    );
}

#[test]
fn numbers_follow_rqlite_rules() {
    let stmts = parse(
        r#"[["SELECT ?,?,?,?,?", 9223372036854775807, -9223372036854775808,
                 9223372036854775808, 1.0, 1e3]]"#,
    )
    .unwrap();
    assert_eq!(
        stmts[0].params,
        Params::Positional(vec![
            Value::Integer(i64::MAX),
            Value::Integer(i64::MIN),
            Value::Real(9223372036854775808.0),
            Value::Real(1.0),
            Value::Real(1000.0),
        ])
    );
}

#[test]
fn byte_arrays_and_hex_strings_are_blobs() {
    let stmts = parse(
        r#"[["SELECT ?,?,?,?,?,?,?", [0, 1, 255], [], "x'0aFF'", "X''",
                 "x'abc'", "x'zz'", "x'00"]]"#,
    )
    .unwrap();
    assert_eq!(
        stmts[0].params,
        Params::Positional(vec![
            Value::Blob(vec![0, 1, 255]),
            Value::Blob(vec![]),
            Value::Blob(vec![0x0a, 0xff]),
            Value::Blob(vec![]),
            Value::Text("x'abc'".into()),
            Value::Text("x'zz'".into()),
            Value::Text("x'00".into()),
        ])
    );
}

#[test]
fn array_with_sql_only_has_no_params() {
    let stmts = parse(r#"[["SELECT 1"], ["SELECT 2", {}]]"#).unwrap();
    assert_eq!(
        stmts,
        vec![Statement::new("SELECT 1"), Statement::new("SELECT 2")]
    );
}

#[test]
fn text_plain_body_is_one_statement() {
    let stmts = parse_statements(
        b"  INSERT INTO foo(name) VALUES('a; b')\n",
        Some("Text/Plain; charset=utf-8"),
    )
    .unwrap();
    assert_eq!(
        stmts,
        vec![Statement::new("INSERT INTO foo(name) VALUES('a; b')")]
    );
    // With text/plain even a JSON-looking body is SQL.
    let stmts = parse_statements(br#"["SELECT 1"]"#, Some("text/plain")).unwrap();
    assert_eq!(stmts, vec![Statement::new(r#"["SELECT 1"]"#)]);
    assert_eq!(
        parse_statements(b" \n", Some("text/plain"))
            .unwrap_err()
            .to_string(),
        "statement 0: the SQL is empty; expected a non-empty SQL statement"
    );
}

#[test]
fn bare_sql_without_text_plain_is_malformed_json() {
    assert!(matches!(
        parse_statements(b"\n SELECT * FROM foo", None),
        Err(RequestError::MalformedJson(_))
    ));
    let stmts = parse_statements(b"\n SELECT * FROM foo", Some("text/plain")).unwrap();
    assert_eq!(stmts, vec![Statement::new("SELECT * FROM foo")]);
}

#[test]
fn malformed_json_is_an_error() {
    assert_eq!(
        parse_err(r#"["SELECT 1""#),
        "invalid JSON body (EOF while parsing a list at line 1 column 11); expected a JSON \
             array of statements such as [\"SELECT 1\"] or [[\"INSERT INTO t VALUES(?)\", 1]], \
             or plain-text SQL with Content-Type: text/plain"
    );
    assert!(parse_err("[1,]").starts_with("invalid JSON body (trailing comma"));
}

#[test]
fn empty_and_non_utf8_bodies_are_errors() {
    assert_eq!(
        parse_statements(b"", None).unwrap_err().to_string(),
        "request body is empty; expected a JSON array of statements such as [\"SELECT 1\"], \
             or plain-text SQL with Content-Type: text/plain"
    );
    assert_eq!(
        parse_statements(b"[\"\xff\"]", None).unwrap_err(),
        RequestError::InvalidUtf8 { offset: 2 }
    );
}

#[test]
fn non_array_body_is_an_error() {
    assert_eq!(
        parse_err(r#"{"sql": "SELECT 1"}"#),
        "request body is an object, not a JSON array; expected an array of statements such \
             as [\"SELECT 1\"] or [[\"INSERT INTO t VALUES(?)\", 1]]"
    );
    assert_eq!(
        parse("true").unwrap_err(),
        RequestError::NotAnArray { found: "a boolean" }
    );
    assert_eq!(
        parse(r#""SELECT 1""#).unwrap_err(),
        RequestError::NotAnArray { found: "a string" }
    );
}

#[test]
fn empty_array_is_an_error() {
    assert_eq!(
        parse_err("[]"),
        "no statements: the JSON array is empty; expected at least one SQL statement"
    );
}

#[test]
fn element_that_is_not_string_or_array_is_an_error() {
    assert_eq!(
        parse_err(r#"["SELECT 1", 42]"#),
        "statement 1 is a number; expected a SQL string or an array [sql, params...] whose \
             first element is the SQL string"
    );
    assert_eq!(
        parse(r#"[{"SELECT 1": 1}]"#).unwrap_err(),
        RequestError::InvalidStatement {
            index: 0,
            found: "an object"
        }
    );
}

#[test]
fn array_without_leading_sql_string_is_an_error() {
    assert_eq!(
        parse_err("[[]]"),
        "statement 0 is an empty array; expected [sql, params...] with the SQL string first"
    );
    assert_eq!(
        parse_err(r#"["SELECT 1", [1, "SELECT ?"]]"#),
        "statement 1: the first element of the array is a number; expected the SQL string \
             first, as in [sql, params...]"
    );
}

#[test]
fn empty_sql_is_an_error() {
    assert_eq!(
        parse_err(r#"["SELECT 1", ""]"#),
        "statement 1: the SQL is empty; expected a non-empty SQL statement"
    );
    assert_eq!(
        parse(r#"["  \n"]"#).unwrap_err(),
        RequestError::EmptySql { index: 0 }
    );
    assert_eq!(
        parse(r#"[["", 1]]"#).unwrap_err(),
        RequestError::EmptySql { index: 0 }
    );
}

#[test]
fn unsupported_param_values_name_statement_and_parameter() {
    assert_eq!(
        parse_err(r#"["SELECT 1", ["SELECT ?, ?", 1, {"a": {"b": 1}}]]"#),
        "statement 1, parameter \"a\": a nested object; expected a number, a string, a \
             boolean, null or an array of byte values (integers 0-255)"
    );
    assert_eq!(
        parse_err(r#"[["SELECT ?, ?", 1, [1, 256]]]"#),
        "statement 0, parameter #2: an array whose element 1 is the number 256, not a byte \
             value; expected a number, a string, a boolean, null or an array of byte values \
             (integers 0-255)"
    );
    assert_eq!(
        parse(r#"[["SELECT ?", ["a"]]]"#).unwrap_err(),
        RequestError::InvalidParam {
            index: 0,
            param: ParamRef::Position(1),
            problem: "an array whose element 0 is a string, not a byte value".into(),
        }
    );
    assert_eq!(
        parse(r#"[["SELECT :a", {":a": [-1]}]]"#).unwrap_err(),
        RequestError::InvalidParam {
            index: 0,
            param: ParamRef::Name(":a".into()),
            problem: "an array whose element 0 is the number -1, not a byte value".into(),
        }
    );
}

#[test]
fn mixed_duplicate_and_empty_named_params_are_errors() {
    assert_eq!(
        parse_err(r#"[["SELECT ?, :a", 1, {"a": 2}]]"#),
        "statement 0 mixes positional and named parameters; expected either [sql, p1, p2, \
             ...] or [sql, {\"name\": value, ...}]"
    );
    assert_eq!(
        parse_err(r#"[["SELECT :a", {":a": 1, "a": 2}]]"#),
        "statement 0: parameter name \"a\" is given more than once (with or without its :, @ \
             or $ sigil); expected each name once"
    );
    assert_eq!(
        parse_err(r#"[["SELECT 1", {"$": 1}]]"#),
        "statement 0, parameter \"$\": the name is empty; expected a name such as \"name\" or \
             \":name\""
    );
}

#[test]
fn query_param_is_one_statement() {
    assert_eq!(
        parse_query_param("SELECT * FROM foo WHERE x = 'a&b'"),
        vec![Statement::new("SELECT * FROM foo WHERE x = 'a&b'")]
    );
    assert_eq!(parse_query_param(""), Vec::<Statement>::new());
    assert_eq!(parse_query_param("  "), Vec::<Statement>::new());
}

#[test]
fn response_options_from_query() {
    let q: HashMap<String, String> = [
        ("pretty", ""),
        ("timings", "true"),
        ("associative", "FALSE"),
        ("level", "strong"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(
        response_options(&q),
        ResponseOptions {
            pretty: true,
            timings: true,
            associative: false,
            blob_array: false,
        }
    );
    let q: HashMap<String, String> = [("blob_array".to_string(), "1".to_string())].into();
    assert_eq!(
        response_options(&q),
        ResponseOptions {
            blob_array: true,
            ..ResponseOptions::default()
        }
    );
    assert_eq!(
        response_options(&HashMap::new()),
        ResponseOptions::default()
    );
}

// ---- response encoding ----

#[test]
fn create_table_is_an_empty_object() {
    assert_eq!(body(&[exec(0, 0)], &opts()), r#"{"results":[{}]}"#);
}

#[test]
fn inserts_report_last_insert_id_and_rows_affected() {
    assert_eq!(
        body(&[exec(1, 1), exec(0, 3), exec(-5, 0)], &opts()),
        r#"{"results":[{"last_insert_id":1,"rows_affected":1},{"rows_affected":3},{"last_insert_id":-5}]}"#
    );
}

#[test]
fn query_has_columns_types_and_values() {
    let r = foo_rows(vec![
        fiona(),
        vec![Value::Integer(2), Value::Null, Value::Real(25.5)],
    ]);
    assert_eq!(
        body(&[r], &opts()),
        r#"{"results":[{"columns":["id","name","age"],"types":["integer","text","integer"],"values":[[1,"fiona",20],[2,null,25.5]]}]}"#
    );
}

#[test]
fn empty_query_omits_values() {
    assert_eq!(
        body(&[foo_rows(vec![])], &opts()),
        r#"{"results":[{"columns":["id","name","age"],"types":["integer","text","integer"]}]}"#
    );
    // Nothing at all to say: like rqlite's omitempty fields, an empty object.
    assert_eq!(
        body(&[StatementResult::Rows(Rows::default())], &opts()),
        r#"{"results":[{}]}"#
    );
}

#[test]
fn associative_rows_are_maps_with_sorted_keys() {
    let o = ResponseOptions {
        associative: true,
        ..opts()
    };
    let r = foo_rows(vec![
        fiona(),
        vec![
            Value::Integer(2),
            Value::Text("declan".into()),
            Value::Integer(25),
        ],
    ]);
    assert_eq!(
        body(&[r, exec(1, 1)], &o),
        r#"{"results":[{"types":{"age":"integer","id":"integer","name":"text"},"rows":[{"age":20,"id":1,"name":"fiona"},{"age":25,"id":2,"name":"declan"}]},{"last_insert_id":1,"rows_affected":1}]}"#
    );
}

#[test]
fn associative_empty_query_has_empty_rows() {
    let o = ResponseOptions {
        associative: true,
        ..opts()
    };
    assert_eq!(
        body(&[foo_rows(vec![])], &o),
        r#"{"results":[{"types":{"age":"integer","id":"integer","name":"text"},"rows":[]}]}"#
    );
    assert_eq!(
        body(&[StatementResult::Rows(Rows::default())], &o),
        r#"{"results":[{"rows":[]}]}"#
    );
}

#[test]
fn unified_associative_execute_has_null_rows() {
    let o = ResponseOptions {
        associative: true,
        timings: true,
        ..opts()
    };
    let v = encode_unified_results(&[exec(1, 1), exec(0, 0), foo_rows(vec![])], &o, None, None);
    assert_eq!(
        to_body(&v, false),
        r#"{"results":[{"last_insert_id":1,"rows_affected":1,"time":0.25,"rows":null},{"time":0.25,"rows":null},{"types":{"age":"integer","id":"integer","name":"text"},"rows":[],"time":0.5}]}"#
    );
    // Not associative: same as /db/execute.
    let v = encode_unified_results(&[exec(1, 1)], &opts(), None, None);
    assert_eq!(
        to_body(&v, false),
        r#"{"results":[{"last_insert_id":1,"rows_affected":1}]}"#
    );
}

/// rqlite command/encoding/json.go NewValuesFromQueryValues: a `Parameter_B` (what
/// normalizeRowParameters makes of go-sqlite3's bool for a BOOLEAN column) is a JSON bool;
/// a time is already its RFC 3339 text (`Parameter_S`).
#[test]
fn booleans_are_json_bools_and_times_strings() {
    let r = StatementResult::Rows(Rows {
        columns: vec!["ok".into(), "ts".into()],
        types: vec!["boolean".into(), "timestamp".into()],
        values: vec![
            vec![
                Value::Bool(true),
                Value::Text("2004-02-14T07:15:00Z".into()),
            ],
            vec![Value::Bool(false), Value::Null],
        ],
        time_secs: 0.0,
    });
    assert_eq!(
        body(std::slice::from_ref(&r), &opts()),
        r#"{"results":[{"columns":["ok","ts"],"types":["boolean","timestamp"],"values":[[true,"2004-02-14T07:15:00Z"],[false,null]]}]}"#
    );
    let o = ResponseOptions {
        associative: true,
        ..opts()
    };
    assert_eq!(
        body(std::slice::from_ref(&r), &o),
        r#"{"results":[{"types":{"ok":"boolean","ts":"timestamp"},"rows":[{"ok":true,"ts":"2004-02-14T07:15:00Z"},{"ok":false,"ts":null}]}]}"#
    );
}

#[test]
fn blobs_are_base64_or_byte_arrays() {
    let r = StatementResult::Rows(Rows {
        columns: vec!["b".into(), "e".into()],
        types: vec!["blob".into(), "blob".into()],
        values: vec![vec![
            Value::Blob(vec![0, 1, 2, 254, 255]),
            Value::Blob(vec![]),
        ]],
        time_secs: 0.0,
    });
    assert_eq!(
        body(std::slice::from_ref(&r), &opts()),
        r#"{"results":[{"columns":["b","e"],"types":["blob","blob"],"values":[["AAEC/v8=",""]]}]}"#
    );
    let o = ResponseOptions {
        blob_array: true,
        ..opts()
    };
    assert_eq!(
        body(std::slice::from_ref(&r), &o),
        r#"{"results":[{"columns":["b","e"],"types":["blob","blob"],"values":[[[0,1,2,254,255],[]]]}]}"#
    );
    let o = ResponseOptions {
        blob_array: true,
        associative: true,
        ..opts()
    };
    assert_eq!(
        body(&[r], &o),
        r#"{"results":[{"types":{"b":"blob","e":"blob"},"rows":[{"b":[0,1,2,254,255],"e":[]}]}]}"#
    );
}

#[test]
fn base64_matches_rfc_4648_vectors() {
    let cases = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (input, expected) in cases {
        assert_eq!(base64_std(input.as_bytes()), expected);
    }
    assert_eq!(base64_std(&[0xfb, 0xff, 0xbf]), "+/+/");
}

#[test]
fn reals_are_formatted_like_go() {
    let r = StatementResult::Rows(Rows {
        columns: vec!["r".into()],
        types: vec!["real".into()],
        values: [
            1.0,
            -0.5,
            0.1,
            1.5e-7,
            1e-10,
            1e21,
            1.25e100,
            1e20,
            0.000001,
            f64::NAN,
            f64::INFINITY,
        ]
        .into_iter()
        .map(|f| vec![Value::Real(f)])
        .collect(),
        time_secs: 0.0,
    });
    assert_eq!(
        body(&[r], &opts()),
        r#"{"results":[{"columns":["r"],"types":["real"],"values":[[1],[-0.5],[0.1],[1.5e-7],[1e-10],[1e+21],[1.25e+100],[100000000000000000000],[0.000001],[null],[null]]}]}"#
    );
}

#[test]
fn timings_add_time_fields_except_zero() {
    let o = ResponseOptions {
        timings: true,
        ..opts()
    };
    let results = [
        exec(1, 1),
        foo_rows(vec![fiona()]),
        StatementResult::Execute {
            last_insert_id: 0,
            rows_affected: 0,
            time_secs: 0.0,
        },
        StatementResult::Error("no such table: bar".into()),
    ];
    assert_eq!(
        to_body(&encode_results(&results, &o, Some(0.0152), None), false),
        r#"{"results":[{"last_insert_id":1,"rows_affected":1,"time":0.25},{"columns":["id","name","age"],"types":["integer","text","integer"],"values":[[1,"fiona",20]],"time":0.5},{},{"error":"no such table: bar"}],"time":0.0152}"#
    );
    // Without the flag, no time anywhere even when measured.
    assert_eq!(
        to_body(
            &encode_results(&results[..1], &opts(), Some(0.0152), None),
            false
        ),
        r#"{"results":[{"last_insert_id":1,"rows_affected":1}]}"#
    );
    // Tiny durations use Go's exponent form.
    assert_eq!(
        to_body(&encode_results(&[], &o, Some(4.2e-7), None), false),
        r#"{"results":[],"time":4.2e-7}"#
    );
}

#[test]
fn error_results() {
    assert_eq!(
        body(
            &[
                exec(1, 1),
                StatementResult::Error("near \"nonsense\": syntax error".into())
            ],
            &opts()
        ),
        r#"{"results":[{"last_insert_id":1,"rows_affected":1},{"error":"near \"nonsense\": syntax error"}]}"#
    );
}

#[test]
fn raft_index_comes_last() {
    let o = ResponseOptions {
        timings: true,
        ..opts()
    };
    assert_eq!(
        to_body(
            &encode_results(&[exec(2, 1)], &o, Some(0.5), Some(42)),
            false
        ),
        r#"{"results":[{"last_insert_id":2,"rows_affected":1,"time":0.25}],"time":0.5,"raft_index":42}"#
    );
    assert_eq!(
        to_body(
            &encode_results(&[exec(0, 0)], &opts(), None, Some(7)),
            false
        ),
        r#"{"results":[{}],"raft_index":7}"#
    );
}

#[test]
fn whole_request_errors() {
    assert_eq!(
        to_body(&encode_error("leader not found", &opts()), false),
        r#"{"error":"leader not found"}"#
    );
    let o = ResponseOptions {
        timings: true,
        ..opts()
    };
    assert_eq!(
        to_body(
            &encode_request_failure("not leader", &o, Some(0.125)),
            false
        ),
        r#"{"results":[],"error":"not leader","time":0.125}"#
    );
    assert_eq!(
        to_body(
            &encode_request_failure("not leader", &opts(), Some(0.125)),
            false
        ),
        r#"{"results":[],"error":"not leader"}"#
    );
}

#[test]
fn pretty_matches_go_marshal_indent() {
    let o = ResponseOptions {
        timings: true,
        pretty: true,
        ..opts()
    };
    let v = encode_results(
        &[foo_rows(vec![fiona()]), exec(0, 0)],
        &o,
        Some(0.0220043),
        None,
    );
    assert_eq!(
        to_body(&v, o.pretty),
        r#"{
    "results": [
        {
            "columns": [
                "id",
                "name",
                "age"
            ],
            "types": [
                "integer",
                "text",
                "integer"
            ],
            "values": [
                [
                    1,
                    "fiona",
                    20
                ]
            ],
            "time": 0.5
        },
        {
            "time": 0.25
        }
    ],
    "time": 0.0220043
}"#
    );
    assert_eq!(
        to_body(&encode_results(&[exec(0, 0)], &opts(), None, None), true),
        "{\n    \"results\": [\n        {}\n    ]\n}"
    );
    let o = ResponseOptions {
        associative: true,
        ..opts()
    };
    assert_eq!(
            to_body(&encode_results(&[foo_rows(vec![])], &o, None, None), true),
            "{\n    \"results\": [\n        {\n            \"types\": {\n                \"age\": \"integer\",\n                \"id\": \"integer\",\n                \"name\": \"text\"\n            },\n            \"rows\": []\n        }\n    ]\n}"
        );
}

#[test]
fn strings_are_escaped_like_go() {
    let r = StatementResult::Rows(Rows {
        columns: vec!["<c>".into()],
        types: vec![String::new()],
        values: vec![vec![Value::Text(
            "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{1}i<j>k&l\u{2028}m\u{2029}n\u{7f}é😀".into(),
        )]],
        time_secs: 0.0,
    });
    assert_eq!(
            body(&[r], &opts()),
            "{\"results\":[{\"columns\":[\"\\u003cc\\u003e\"],\"types\":[\"\"],\"values\":[[\"a\\\"b\\\\c\\nd\\re\\tf\\bg\\fh\\u0001i\\u003cj\\u003ek\\u0026l\\u2028m\\u2029n\u{7f}é😀\"]]}]}"
        );
}

#[test]
fn mismatched_row_lengths_do_not_panic() {
    let r = StatementResult::Rows(Rows {
        columns: vec!["a".into(), "b".into()],
        types: vec!["integer".into()],
        values: vec![vec![Value::Integer(1)]],
        time_secs: 0.0,
    });
    let o = ResponseOptions {
        associative: true,
        ..opts()
    };
    assert_eq!(
        body(&[r], &o),
        r#"{"results":[{"types":{"a":"integer","b":""},"rows":[{"a":1,"b":null}]}]}"#
    );
}

#[test]
fn encoded_value_round_trips_through_serde() {
    // The Value itself is ordinary JSON: any serializer gives an equivalent document.
    let v = encode_results(&[foo_rows(vec![fiona()])], &opts(), None, None);
    let reparsed: Json = serde_json::from_str(&to_body(&v, false)).unwrap();
    assert_eq!(reparsed, v);
    let reparsed: Json = serde_json::from_str(&to_body(&v, true)).unwrap();
    assert_eq!(reparsed, v);
}
