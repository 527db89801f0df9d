//! The golden vectors of docs/PROTOCOL.md §3.5 (a routed REQ) and §8.7 (the routing table:
//! a link record and its key) are what the code produces, byte for byte, and the document
//! holds them as written here.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use dms::ServicePath;
use dms::routing::{Link, LinkRecord, links_key, table_key};
use dms_core::proto::control::{Body, CommandCode, Control, Route, flags};

const LOBBY_1: &str = "/demo/cn/android/w1/g1/Lobby/lobby-1";
const TRADE_1: &str = "/demo/cn/android/w1/g1/Trade/trade-1";
const BROKER_1: &str = "/demo/cn/android/w1/g1/Broker/broker-1";

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn routed_req() -> Control {
    let mut req = Control::new(CommandCode::Req, flags::EXPECT_REPLY, 7, Body::Empty).with_route(
        Some(Route {
            origin: LOBBY_1.parse().unwrap(),
            destination: TRADE_1.parse().unwrap(),
        }),
    );
    req.hop_limit = 15;
    req
}

fn broker_record() -> LinkRecord {
    LinkRecord::new(
        true,
        vec![
            Link {
                to: TRADE_1.into(),
                cost: 1,
            },
            Link {
                to: LOBBY_1.into(),
                cost: 300,
            },
        ],
    )
}

/// §3.5: the routed REQ.
const ROUTED_REQ: &str = "01 05 01 0f 00 00 00 00 00 00 00 07 48 e2 90 2f 05 e8 56 db fd 14 a6 9c 04 17 c9 9f \
00 4c 02 24 2f 64 65 6d 6f 2f 63 6e 2f 61 6e 64 72 6f 69 64 2f 77 31 2f 67 31 2f 4c 6f 62 62 79 2f 6c 6f 62 62 \
79 2d 31 03 24 2f 64 65 6d 6f 2f 63 6e 2f 61 6e 64 72 6f 69 64 2f 77 31 2f 67 31 2f 54 72 61 64 65 2f 74 72 61 \
64 65 2d 31";
/// §8.7: broker-1's link record.
const BROKER_RECORD: &str = "01 01 02 24 2f 64 65 6d 6f 2f 63 6e 2f 61 6e 64 72 6f 69 64 2f 77 31 2f 67 31 \
2f 4c 6f 62 62 79 2f 6c 6f 62 62 79 2d 31 ac 02 24 2f 64 65 6d 6f 2f 63 6e 2f 61 6e 64 72 6f 69 64 2f 77 31 2f \
67 31 2f 54 72 61 64 65 2f 74 72 61 64 65 2d 31 01";
const TABLE_KEY: &str = "/demo/cn/android/routing_table";
const BROKER_KEY: &str = "/demo/cn/android/routing_table/w1/g1/Broker/broker-1";
const TRADE_HASH: &str = "0xfd14a69c0417c99f";

fn section<'a>(doc: &'a str, start: &str, end: &str) -> &'a str {
    doc.split(start)
        .nth(1)
        .and_then(|rest| rest.split(end).next())
        .unwrap_or_else(|| panic!("PROTOCOL.md lacks {start}"))
}

fn one_line(vector: &str) -> String {
    vector.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_document_holds_the_vectors_of_this_file() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md"))
        .unwrap();
    let routed = section(&doc, "### 3.5 ", "\n## 4. ");
    for vector in [one_line(ROUTED_REQ), TRADE_HASH.to_owned()] {
        assert!(routed.contains(&vector), "§3.5 lacks {vector:?}");
    }
    let table = section(&doc, "### 8.7 ", "\n## 9. ");
    for vector in [
        one_line(BROKER_RECORD),
        TABLE_KEY.to_owned(),
        BROKER_KEY.to_owned(),
    ] {
        assert!(table.contains(&vector), "§8.7 lacks {vector:?}");
    }
}

#[test]
fn the_code_writes_the_documented_bytes() {
    assert_eq!(hex(&routed_req().encode()), one_line(ROUTED_REQ));
    assert_eq!(Control::decode(&routed_req().encode()), Ok(routed_req()));
    assert_eq!(
        format!("{:#018x}", TRADE_1.parse::<ServicePath>().unwrap().hash64()),
        TRADE_HASH
    );
    assert_eq!(hex(&broker_record().encode()), one_line(BROKER_RECORD));
    assert_eq!(
        LinkRecord::decode(&broker_record().encode()),
        Ok(broker_record())
    );
    let broker: ServicePath = BROKER_1.parse().unwrap();
    assert_eq!(table_key(&broker).unwrap().as_str(), TABLE_KEY);
    assert_eq!(links_key(&broker).unwrap().as_str(), BROKER_KEY);
}
