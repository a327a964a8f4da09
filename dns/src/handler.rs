//! The one query function both transports call: `answer(zone, query, transport, out)`.
//!
//! ```text
//!  query bytes ──► fast path (wire patching: header, question copy, pre-encoded body, OPT)
//!                     │ anything it does not fully understand (mixed-case name, EDNS version,
//!                     │ opcode, class, extra sections, malformed input …)
//!                     ▼
//!                  full path (hickory-proto decode → Message → encode)
//! ```
//! Both give byte-for-byte the same reply wherever the fast path answers (tested).

use std::sync::Arc;

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, RData, Record, RecordType},
};

use crate::zone::{Answer, SOA_EXPIRE, SOA_REFRESH, SOA_RETRY, Zone};

/// How the query arrived; UDP replies are limited to the client's EDNS size (or 512).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Datagram: truncate (TC) what does not fit.
    Udp,
    /// Stream: no size limit but 65535.
    Tcp,
}

/// What [`answer`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `out` holds a reply with this response code (the 12-bit extended value) for this qtype.
    Reply {
        /// Response code.
        rcode: u16,
        /// Query type of the question (0 when there was none).
        qtype: u16,
        /// Whether the reply was truncated.
        truncated: bool,
    },
    /// No reply must be sent (not a DNS query, or a response).
    Drop,
}

const QTYPE_AXFR: u16 = 252;
const QTYPE_IXFR: u16 = 251;
const QTYPE_OPT: u16 = 41;
const HEADER: usize = 12;
const OPT_LEN: usize = 11;

/// Answers one query into `out` (cleared first). Never panics, whatever the input.
pub fn answer(zone: &Zone, query: &[u8], transport: Transport, out: &mut Vec<u8>) -> Outcome {
    out.clear();
    if let Some(outcome) = answer_fast(zone, query, transport, out) {
        return outcome;
    }
    answer_full(zone, query, transport, out)
}

/// The parsed parts of a query the fast path understands.
struct Parsed<'q> {
    id: [u8; 2],
    rd_cd: (bool, bool),
    /// The whole question section as received.
    question: &'q [u8],
    /// Lower-case wire name (already verified to be lower-case).
    qname_len: usize,
    qtype: u16,
    /// `Some((payload, dnssec_ok))` when the query has an OPT record.
    edns: Option<(u16, bool)>,
}

#[inline]
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// Parses a plain query: QR=0, QUERY, one IN question with a lower-case uncompressed name,
/// no answer/authority records, at most an EDNS(0) OPT with RCODE/version 0, nothing after.
#[inline]
fn parse_plain(q: &[u8]) -> Option<Parsed<'_>> {
    if q.len() < HEADER + 5 || q[2] & 0xF8 != 0 || be16(q, 4) != 1 || be16(q, 6) != 0 || be16(q, 8) != 0 {
        return None;
    }
    let arcount = be16(q, 10);
    if arcount > 1 {
        return None;
    }
    let mut pos = HEADER;
    loop {
        let len = usize::from(*q.get(pos)?);
        if len == 0 {
            pos += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        let label = q.get(pos + 1..pos + 1 + len)?;
        if label.iter().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        pos += 1 + len;
    }
    let qname_len = pos - HEADER;
    if qname_len > 255 || q.len() < pos + 4 {
        return None;
    }
    let qtype = be16(q, pos);
    if be16(q, pos + 2) != u16::from(DNSClass::IN) || qtype == QTYPE_OPT {
        return None;
    }
    let question_end = pos + 4;
    let edns = if arcount == 1 {
        let o = q.get(question_end..question_end + OPT_LEN)?;
        if o[0] != 0 || be16(o, 1) != QTYPE_OPT || o[5] != 0 || o[6] != 0 {
            return None;
        }
        if question_end + OPT_LEN + usize::from(be16(o, 9)) != q.len() {
            return None;
        }
        // Options are skipped, but must be well formed (code, length, data) to the end.
        let mut p = question_end + OPT_LEN;
        while p < q.len() {
            let len = usize::from(be16(q.get(p..p + 4)?, 2));
            p += 4 + len;
        }
        if p != q.len() {
            return None;
        }
        Some((be16(o, 3), o[7] & 0x80 != 0))
    } else {
        if question_end != q.len() {
            return None;
        }
        None
    };
    Some(Parsed {
        id: [q[0], q[1]],
        rd_cd: (q[2] & 0x01 != 0, q[3] & 0x10 != 0),
        question: &q[HEADER..question_end],
        qname_len,
        qtype,
        edns,
    })
}

/// The UDP size limit for a query with this EDNS payload.
#[inline]
fn udp_limit(zone: &Zone, edns: Option<(u16, bool)>) -> usize {
    match edns {
        Some((payload, _)) => usize::from(payload.clamp(512, zone.origin.max_udp_payload)),
        None => 512,
    }
}

#[inline]
fn push_header(out: &mut Vec<u8>, p: &Parsed<'_>, aa: bool, tc: bool, rcode: u8, counts: [u16; 4]) {
    let mut f0 = 0x80;
    if aa {
        f0 |= 0x04;
    }
    if tc {
        f0 |= 0x02;
    }
    if p.rd_cd.0 {
        f0 |= 0x01;
    }
    let f1 = if p.rd_cd.1 { 0x10 } else { 0 } | (rcode & 0x0F);
    out.extend_from_slice(&[p.id[0], p.id[1], f0, f1]);
    for c in counts {
        out.extend_from_slice(&c.to_be_bytes());
    }
}

#[inline]
fn push_opt(out: &mut Vec<u8>, zone: &Zone, dnssec_ok: bool) {
    let payload = zone.origin.max_udp_payload.to_be_bytes();
    let flags = if dnssec_ok { 0x80 } else { 0 };
    out.extend_from_slice(&[0, 0, 41, payload[0], payload[1], 0, 0, flags, 0, 0, 0]);
}

/// A reply with only the question (and OPT): REFUSED, or a truncated answer.
fn push_bare(out: &mut Vec<u8>, zone: &Zone, p: &Parsed<'_>, aa: bool, tc: bool, rcode: u8) {
    out.clear();
    push_header(out, p, aa, tc, rcode, [1, 0, 0, u16::from(p.edns.is_some())]);
    out.extend_from_slice(p.question);
    if let Some((_, dok)) = p.edns {
        push_opt(out, zone, dok);
    }
}

/// The fast path alone: `None` means it does not fully understand the query and [`answer`]
/// would hand it to [`answer_full`]. Public so tests can prove both paths agree byte for byte.
#[inline]
pub fn answer_fast(zone: &Zone, query: &[u8], transport: Transport, out: &mut Vec<u8>) -> Option<Outcome> {
    let p = parse_plain(query)?;
    out.clear();
    let origin = &zone.origin.wire;
    let qname = &p.question[..p.qname_len];
    let reply = |rcode: u8, truncated| {
        Some(Outcome::Reply {
            rcode: u16::from(rcode),
            qtype: p.qtype,
            truncated,
        })
    };
    // In the zone only if the origin is a label-aligned suffix of the name.
    let in_zone = qname.len() >= origin.len()
        && qname.ends_with(origin)
        && label_boundary(qname, qname.len() - origin.len());
    if !in_zone || p.qtype == QTYPE_AXFR || p.qtype == QTYPE_IXFR {
        push_bare(out, zone, &p, false, false, ResponseCode::Refused.low());
        return reply(ResponseCode::Refused.low(), false);
    }
    let key = &qname[..qname.len() - origin.len()];
    let limit = match transport {
        Transport::Udp => udp_limit(zone, p.edns),
        Transport::Tcp => usize::from(u16::MAX),
    };
    let opt = usize::from(p.edns.is_some());
    let node = zone.lookup(key);
    if let Some(a) = node.and_then(|n| n.get(p.qtype)) {
        let total = HEADER + p.question.len() + a.body.len() + opt * OPT_LEN;
        if total > limit {
            push_bare(out, zone, &p, true, true, 0);
            return reply(0, true);
        }
        push_positive(out, zone, &p, a);
        return reply(0, false);
    }
    // Negative: the SOA's MNAME/RNAME could compress into a question ending in `dns.<zone>` or
    // `hostmaster.<zone>`; those rare names take the full path.
    let last = last_label(key);
    if last == b"dns" || last == b"hostmaster" {
        return None;
    }
    let rcode = if !zone.synced() {
        ResponseCode::ServFail.low()
    } else if node.is_some() {
        ResponseCode::NoError.low()
    } else {
        ResponseCode::NXDomain.low()
    };
    push_header(out, &p, true, false, rcode, [1, 0, 1, opt as u16]);
    out.extend_from_slice(p.question);
    push_soa(out, zone, HEADER + key.len());
    if let Some((_, dok)) = p.edns {
        push_opt(out, zone, dok);
    }
    if out.len() > limit {
        push_bare(out, zone, &p, true, true, rcode);
        return reply(rcode, true);
    }
    reply(rcode, false)
}

#[inline]
fn push_positive(out: &mut Vec<u8>, zone: &Zone, p: &Parsed<'_>, a: &Answer) {
    let opt = u16::from(p.edns.is_some());
    push_header(
        out,
        p,
        true,
        false,
        0,
        [1, a.answers, a.authorities, a.additionals + opt],
    );
    out.extend_from_slice(p.question);
    out.extend_from_slice(&a.body);
    if let Some((_, dok)) = p.edns {
        push_opt(out, zone, dok);
    }
}

/// The SOA record of negative answers, its owner a pointer to the zone suffix of the question.
#[inline]
fn push_soa(out: &mut Vec<u8>, zone: &Zone, apex_offset: usize) {
    let ptr = (0xC000 | apex_offset as u16).to_be_bytes();
    let o = &zone.origin;
    out.extend_from_slice(&ptr);
    out.extend_from_slice(&[0, 6, 0, 1]);
    out.extend_from_slice(&o.soa_ttl.to_be_bytes());
    // rdata: \x02ns\x03dns<ptr> \x0ahostmaster<ptr> + 5 × 32 bits
    let rdlen: u16 = 7 + 2 + 11 + 2 + 20;
    out.extend_from_slice(&rdlen.to_be_bytes());
    out.extend_from_slice(b"\x02ns\x03dns");
    out.extend_from_slice(&ptr);
    out.extend_from_slice(b"\x0ahostmaster");
    out.extend_from_slice(&ptr);
    out.extend_from_slice(&zone.soa.serial.to_be_bytes());
    for timer in [SOA_REFRESH, SOA_RETRY, SOA_EXPIRE] {
        out.extend_from_slice(&timer.to_be_bytes());
    }
    out.extend_from_slice(&zone.soa.minimum.to_be_bytes());
}

/// Whether `at` is the start of a label of the (valid, uncompressed) wire name.
#[inline]
fn label_boundary(name: &[u8], at: usize) -> bool {
    let mut i = 0;
    while i < at {
        i += 1 + usize::from(name[i]);
    }
    i == at
}

/// The last label of a relative key (empty for the apex).
fn last_label(key: &[u8]) -> &[u8] {
    let mut i = 0;
    let mut last: &[u8] = &[];
    while i < key.len() {
        let len = usize::from(key[i]);
        last = &key[i + 1..i + 1 + len];
        i += 1 + len;
    }
    last
}

/// The full path: decode with hickory-proto, decide, encode with hickory-proto.
pub fn answer_full(zone: &Zone, query: &[u8], transport: Transport, out: &mut Vec<u8>) -> Outcome {
    out.clear();
    if query.len() < HEADER || query[2] & 0x80 != 0 {
        // Not even a header, or a response: never answer (no reflection, no loops).
        return Outcome::Drop;
    }
    let request = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => {
            let mut msg = Message::error_msg(
                be16(query, 0),
                OpCode::from_u8((query[2] >> 3) & 0x0F),
                ResponseCode::FormErr,
            );
            msg.metadata.recursion_desired = query[2] & 0x01 != 0;
            msg.metadata.checking_disabled = query[3] & 0x10 != 0;
            return finish(msg, transport, 512, 0, out);
        }
    };
    let mut msg = Message::response(request.metadata.id, request.metadata.op_code);
    msg.metadata.recursion_desired = request.metadata.recursion_desired;
    msg.metadata.checking_disabled = request.metadata.checking_disabled;
    msg.add_queries(request.queries.iter().cloned());
    let limit = match &request.edns {
        Some(edns) => {
            let mut e = Edns::new();
            e.set_max_payload(zone.origin.max_udp_payload);
            e.set_dnssec_ok(edns.flags().dnssec_ok);
            msg.set_edns(e);
            usize::from(edns.max_payload().clamp(512, zone.origin.max_udp_payload))
        }
        None => 512,
    };
    let qtype = request
        .queries
        .first()
        .map(|q| u16::from(q.query_type()))
        .unwrap_or(0);
    let rcode = if request.metadata.op_code != OpCode::Query {
        ResponseCode::NotImp
    } else if request.queries.len() != 1 {
        ResponseCode::FormErr
    } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        ResponseCode::BADVERS
    } else {
        let q = &request.queries[0];
        resolve(zone, q, &mut msg)
    };
    msg.metadata.response_code = rcode;
    finish(msg, transport, limit, qtype, out)
}

fn finish(msg: Message, transport: Transport, limit: usize, qtype: u16, out: &mut Vec<u8>) -> Outcome {
    let rcode = u16::from(msg.metadata.response_code);
    let Ok(bytes) = msg.to_vec() else {
        return Outcome::Drop;
    };
    let limit = match transport {
        Transport::Udp => limit,
        Transport::Tcp => usize::from(u16::MAX),
    };
    if bytes.len() > limit {
        let Ok(bytes) = msg.truncate().to_vec() else {
            return Outcome::Drop;
        };
        out.extend_from_slice(&bytes);
        return Outcome::Reply {
            rcode,
            qtype,
            truncated: true,
        };
    }
    out.extend_from_slice(&bytes);
    Outcome::Reply {
        rcode,
        qtype,
        truncated: false,
    }
}

/// Fills the answer of one IN/other-class question into `msg` and returns its response code.
fn resolve(zone: &Zone, q: &Query, msg: &mut Message) -> ResponseCode {
    let origin = &zone.origin;
    let lower = q.name().to_lowercase();
    let qtype = q.query_type();
    if q.query_class() != DNSClass::IN || !origin.name.zone_of(&lower) {
        return ResponseCode::Refused;
    }
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return ResponseCode::Refused;
    }
    msg.metadata.authoritative = true;
    let Some(key) = relative_key(&lower, origin.name.num_labels()) else {
        return ResponseCode::Refused;
    };
    let node = zone.lookup(&key);
    if let Some(a) = node.and_then(|n| n.get(u16::from(qtype))) {
        match decode_answer(&lower, qtype, a) {
            Some(decoded) => {
                let mut fqdn = q.name().clone();
                fqdn.set_fqdn(true);
                let answers = decoded
                    .answers
                    .into_iter()
                    .map(|r| {
                        if r.name == lower {
                            Record::from_rdata(fqdn.clone(), r.ttl, r.data)
                        } else {
                            r
                        }
                    })
                    .collect::<Vec<_>>();
                msg.add_answers(answers);
                msg.add_authorities(decoded.authorities);
                msg.add_additionals(decoded.additionals);
                return ResponseCode::NoError;
            }
            None => return ResponseCode::ServFail,
        }
    }
    let soa = Record::from_rdata(
        origin.name.clone(),
        origin.soa_ttl,
        RData::SOA(hickory_proto::rr::rdata::SOA::new(
            origin
                .name
                .prepend_label("dns")
                .and_then(|n| n.prepend_label("ns"))
                .unwrap_or_else(|_| origin.name.clone()),
            origin
                .name
                .prepend_label("hostmaster")
                .unwrap_or_else(|_| origin.name.clone()),
            zone.soa.serial,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            zone.soa.minimum,
        )),
    );
    msg.add_authority(soa);
    if !zone.synced() {
        ResponseCode::ServFail
    } else if node.is_some() {
        ResponseCode::NoError
    } else {
        ResponseCode::NXDomain
    }
}

/// The lower-case wire labels of `name` without its last `origin_labels` labels and the root.
fn relative_key(name: &Name, origin_labels: u8) -> Option<Vec<u8>> {
    let keep = name.num_labels().checked_sub(origin_labels)?;
    let mut key = Vec::with_capacity(name.len());
    for label in name.iter().take(usize::from(keep)) {
        key.push(u8::try_from(label.len()).ok()?);
        key.extend_from_slice(label);
    }
    Some(key)
}

/// Records of a pre-encoded answer, decoded by hickory-proto.
pub(crate) struct Decoded {
    pub(crate) answers: Vec<Record>,
    pub(crate) authorities: Vec<Record>,
    pub(crate) additionals: Vec<Record>,
}

pub(crate) fn decode_answer(owner: &Name, qtype: RecordType, a: &Answer) -> Option<Decoded> {
    let mut msg = Message::response(0, OpCode::Query);
    msg.metadata.message_type = MessageType::Response;
    msg.add_query(Query::query(owner.clone(), qtype));
    let mut bytes = msg.to_vec().ok()?;
    bytes[6..8].copy_from_slice(&a.answers.to_be_bytes());
    bytes[8..10].copy_from_slice(&a.authorities.to_be_bytes());
    bytes[10..12].copy_from_slice(&a.additionals.to_be_bytes());
    bytes.extend_from_slice(&a.body);
    let decoded = Message::from_vec(&bytes).ok()?;
    Some(Decoded {
        answers: decoded.answers,
        authorities: decoded.authorities,
        additionals: decoded.additionals,
    })
}

/// A zone shared between its writer and the servers: readers `load()` without locks.
pub type SharedZone = Arc<arc_swap::ArcSwap<Zone>>;
