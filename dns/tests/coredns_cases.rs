//! The 37 cases of CoreDNS's multicluster plugin (`TestServeDNS`, in file order), plus its other
//! handler tests, translated from `cluster.local` to `clusterset.local`.

mod common;

use common::*;
use hickory_proto::{op::ResponseCode, rr::RecordType};
use mcsd_dns::Zone;

const Z: &str = "clusterset.local.";

fn n(rel: &str) -> String {
    format!("{rel}.{Z}")
}

#[test]
fn case_01_clustersetip_a_answers_the_vip() {
    assert_answers(
        &ask(&coredns_zone(), &n("svc1.testns.svc"), RecordType::A),
        &["10.0.0.1"],
    );
}

#[test]
fn case_02_clustersetip_without_endpoints_still_answers_the_vip() {
    assert_answers(
        &ask(&coredns_zone(), &n("svcempty.testns.svc"), RecordType::A),
        &["10.0.0.1"],
    );
}

#[test]
fn case_03_bare_service_srv_names_the_service_with_the_vip_as_additional() {
    let m = ask(&coredns_zone(), &n("svc1.testns.svc"), RecordType::SRV);
    assert_answers(&m, &["0 100 80 svc1.testns.svc.clusterset.local."]);
    assert_eq!(sorted(&m.additionals), vec!["10.0.0.1"]);
    assert_eq!(
        m.additionals[0].name.to_ascii(),
        "svc1.testns.svc.clusterset.local."
    );
}

#[test]
fn case_04_bare_srv_of_a_service_without_endpoints() {
    let m = ask(&coredns_zone(), &n("svcempty.testns.svc"), RecordType::SRV);
    assert_answers(&m, &["0 100 80 svcempty.testns.svc.clusterset.local."]);
    assert_eq!(sorted(&m.additionals), vec!["10.0.0.1"]);
}

#[test]
fn case_05_bare_srv_of_an_ipv6_service_carries_the_aaaa() {
    let m = ask(&coredns_zone(), &n("svc6.testns.svc"), RecordType::SRV);
    assert_answers(&m, &["0 100 80 svc6.testns.svc.clusterset.local."]);
    assert_eq!(sorted(&m.additionals), vec!["1234:abcd::1"]);
}

#[test]
fn case_06_port_srv_names_the_service() {
    let m = ask(&coredns_zone(), &n("_http._tcp.svc1.testns.svc"), RecordType::SRV);
    assert_answers(&m, &["0 100 80 svc1.testns.svc.clusterset.local."]);
    assert_eq!(sorted(&m.additionals), vec!["10.0.0.1"]);
}

#[test]
fn case_07_port_srv_of_a_service_without_endpoints() {
    let m = ask(
        &coredns_zone(),
        &n("_http._tcp.svcempty.testns.svc"),
        RecordType::SRV,
    );
    assert_answers(&m, &["0 100 80 svcempty.testns.svc.clusterset.local."]);
}

#[test]
fn case_08_headless_a_answers_every_ready_ipv4_endpoint() {
    let m = ask(&coredns_zone(), &n("hdls1.testns.svc"), RecordType::A);
    assert_answers(&m, &["172.0.0.2", "172.0.0.3", "172.0.0.4", "172.0.0.5"]);
}

#[test]
fn case_09_headless_without_ports_answers_a() {
    assert_answers(
        &ask(&coredns_zone(), &n("hdlsprtls.testns.svc"), RecordType::A),
        &["172.0.0.20"],
    );
}

#[test]
fn case_10_dashed_ip_endpoint_name_of_a_portless_headless_service() {
    let m = ask(
        &coredns_zone(),
        &n("172-0-0-20.clusterid.hdlsprtls.testns.svc"),
        RecordType::A,
    );
    assert_answers(&m, &["172.0.0.20"]);
}

#[test]
fn case_11_dashed_ip_endpoint_name() {
    assert_answers(
        &ask(
            &coredns_zone(),
            &n("172-0-0-2.clusterid.hdls1.testns.svc"),
            RecordType::A,
        ),
        &["172.0.0.2"],
    );
}

#[test]
fn case_12_another_dashed_ip_endpoint_name() {
    assert_answers(
        &ask(
            &coredns_zone(),
            &n("172-0-0-3.clusterid.hdls1.testns.svc"),
            RecordType::A,
        ),
        &["172.0.0.3"],
    );
}

#[test]
fn case_13_two_endpoints_sharing_a_hostname_give_two_records() {
    let m = ask(
        &coredns_zone(),
        &n("dup-name.clusterid.hdls1.testns.svc"),
        RecordType::A,
    );
    assert_answers(&m, &["172.0.0.4", "172.0.0.5"]);
}

#[test]
fn case_14_cluster_id_directly_under_a_service_is_nxdomain() {
    assert_negative(
        &ask(&coredns_zone(), &n("clusterid.hdls1.testns.svc"), RecordType::A),
        ResponseCode::NXDomain,
    );
}

#[test]
fn case_15_headless_port_srv_lists_each_target_once_with_every_address_as_additional() {
    let m = ask(
        &coredns_zone(),
        &n("_http._tcp.hdls1.testns.svc"),
        RecordType::SRV,
    );
    assert_answers(
        &m,
        &[
            "0 16 80 172-0-0-2.clusterid.hdls1.testns.svc.clusterset.local.",
            "0 16 80 172-0-0-3.clusterid.hdls1.testns.svc.clusterset.local.",
            "0 16 80 5678-abcd--1.clusterid.hdls1.testns.svc.clusterset.local.",
            "0 16 80 5678-abcd--2.clusterid.hdls1.testns.svc.clusterset.local.",
            "0 16 80 dup-name.clusterid.hdls1.testns.svc.clusterset.local.",
        ],
    );
    assert_eq!(
        sorted(&m.additionals),
        vec![
            "172.0.0.2",
            "172.0.0.3",
            "172.0.0.4",
            "172.0.0.5",
            "5678:abcd::1",
            "5678:abcd::2"
        ]
    );
}

#[test]
fn case_16_headless_a_repeated_is_the_same() {
    let z = coredns_zone();
    let first = ask(&z, &n("hdls1.testns.svc"), RecordType::A);
    let again = ask(&z, &n("hdls1.testns.svc"), RecordType::A);
    assert_eq!(sorted(&first.answers), sorted(&again.answers));
    assert_eq!(again.answers.len(), 4);
}

#[test]
fn case_17_ipv6_dashed_endpoint_name() {
    assert_answers(
        &ask(
            &coredns_zone(),
            &n("5678-abcd--2.clusterid.hdls1.testns.svc"),
            RecordType::AAAA,
        ),
        &["5678:abcd::2"],
    );
}

#[test]
fn case_18_aaaa_of_an_ipv4_only_service_is_nodata() {
    assert_negative(
        &ask(&coredns_zone(), &n("svc1.testns.svc"), RecordType::AAAA),
        ResponseCode::NoError,
    );
}

#[test]
fn case_19_aaaa_of_a_missing_import_is_nxdomain() {
    assert_negative(
        &ask(&coredns_zone(), &n("svc0.testns.svc"), RecordType::AAAA),
        ResponseCode::NXDomain,
    );
}

#[test]
fn case_20_a_of_a_missing_import_is_nxdomain() {
    assert_negative(
        &ask(&coredns_zone(), &n("svc0.testns.svc"), RecordType::A),
        ResponseCode::NXDomain,
    );
}

#[test]
fn case_21_a_missing_namespace_is_nxdomain() {
    assert_negative(
        &ask(&coredns_zone(), &n("svc0.svc-nons.svc"), RecordType::A),
        ResponseCode::NXDomain,
    );
}

#[test]
fn case_22_dns_version_txt_is_1_1_0_with_ttl_28800() {
    let m = ask(&coredns_zone(), &n("dns-version"), RecordType::TXT);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].ttl, 28800);
    assert_eq!(rdata(&m.answers[0]), "1.1.0");
}

#[test]
fn case_23_txt_of_an_existing_import_is_nodata() {
    assert_negative(
        &ask(&coredns_zone(), &n("svc1.testns.svc"), RecordType::TXT),
        ResponseCode::NoError,
    );
}

#[test]
fn case_24_txt_in_a_missing_namespace_is_nxdomain() {
    assert_negative(
        &ask(&coredns_zone(), &n("svc0.svc-nons.svc"), RecordType::TXT),
        ResponseCode::NXDomain,
    );
}

#[test]
fn case_25_unknown_endpoint_is_nxdomain() {
    assert_negative(
        &ask(
            &coredns_zone(),
            &n("bogusendpoint.clusterid.hdls1.testns.svc"),
            RecordType::A,
        ),
        ResponseCode::NXDomain,
    );
}

#[test]
fn case_26_endpoint_of_a_missing_service_is_nxdomain() {
    assert_negative(
        &ask(
            &coredns_zone(),
            &n("bogusendpoint.clusterid.svc0.testns.svc"),
            RecordType::A,
        ),
        ResponseCode::NXDomain,
    );
}

#[test]
fn case_27_ipv6_clustersetip_aaaa() {
    assert_answers(
        &ask(&coredns_zone(), &n("svc6.testns.svc"), RecordType::AAAA),
        &["1234:abcd::1"],
    );
}

#[test]
fn case_28_port_srv_of_an_ipv6_service() {
    let m = ask(&coredns_zone(), &n("_http._tcp.svc6.testns.svc"), RecordType::SRV);
    assert_answers(&m, &["0 100 80 svc6.testns.svc.clusterset.local."]);
    assert_eq!(sorted(&m.additionals), vec!["1234:abcd::1"]);
}

#[test]
fn case_29_headless_aaaa_answers_every_ready_ipv6_endpoint() {
    assert_answers(
        &ask(&coredns_zone(), &n("hdls1.testns.svc"), RecordType::AAAA),
        &["5678:abcd::1", "5678:abcd::2"],
    );
}

#[test]
fn case_30_ipv6_dashed_endpoint_name_aaaa() {
    assert_answers(
        &ask(
            &coredns_zone(),
            &n("5678-abcd--1.clusterid.hdls1.testns.svc"),
            RecordType::AAAA,
        ),
        &["5678:abcd::1"],
    );
}

#[test]
fn case_31_svc_empty_non_terminal_is_nodata() {
    assert_negative(
        &ask(&coredns_zone(), &n("svc"), RecordType::A),
        ResponseCode::NoError,
    );
}

#[test]
fn case_32_pod_empty_non_terminal_is_nodata() {
    assert_negative(
        &ask(&coredns_zone(), &n("pod"), RecordType::A),
        ResponseCode::NoError,
    );
}

#[test]
fn case_33_existing_namespace_is_nodata() {
    assert_negative(
        &ask(&coredns_zone(), &n("testns.svc"), RecordType::A),
        ResponseCode::NoError,
    );
}

#[test]
fn case_34_dual_stack_a() {
    assert_answers(
        &ask(&coredns_zone(), &n("svc-dual-stack.testns.svc"), RecordType::A),
        &["10.0.0.3"],
    );
}

#[test]
fn case_35_dual_stack_aaaa() {
    assert_answers(
        &ask(&coredns_zone(), &n("svc-dual-stack.testns.svc"), RecordType::AAAA),
        &["10::3"],
    );
}

#[test]
fn case_36_dual_stack_srv_is_one_record_weight_50_with_both_addresses() {
    let m = ask(&coredns_zone(), &n("svc-dual-stack.testns.svc"), RecordType::SRV);
    assert_answers(&m, &["0 50 80 svc-dual-stack.testns.svc.clusterset.local."]);
    assert_eq!(sorted(&m.additionals), vec!["10.0.0.3", "10::3"]);
}

#[test]
fn case_37_soa_of_a_non_apex_name_is_nodata_with_soa() {
    assert_negative(
        &ask(&coredns_zone(), &n("svc1.testns.svc"), RecordType::SOA),
        ResponseCode::NoError,
    );
}

#[test]
fn namespace_test_import_answers_only_where_its_namespace_exists() {
    let z = coredns_zone();
    assert_answers(&ask(&z, &n("svc1.testns.svc"), RecordType::A), &["10.0.0.1"]);
    assert_negative(
        &ask(&z, &n("svc1.svc-nons.svc"), RecordType::A),
        ResponseCode::NXDomain,
    );
}

#[test]
fn not_synced_would_be_nxdomain_is_servfail_with_soa() {
    let z = Zone::build(&config(), &coredns_input(false)).unwrap();
    assert_negative(
        &ask(&z, &n("svc0.testns.svc"), RecordType::A),
        ResponseCode::ServFail,
    );
    // Positive data is served before the sync.
    assert_answers(&ask(&z, &n("svc1.testns.svc"), RecordType::A), &["10.0.0.1"]);
}

#[test]
fn endpoint_without_cluster_id_is_nxdomain() {
    assert_negative(
        &ask(
            &coredns_zone(),
            &n("5678-abcd--1.hdls1.testns.svc"),
            RecordType::AAAA,
        ),
        ResponseCode::NXDomain,
    );
}

#[test]
fn empty_labels_and_pood_subdomain_do_not_panic_and_are_not_served() {
    let z = coredns_zone();
    assert_negative(
        &ask(&z, &n("svc1.testns.pood"), RecordType::A),
        ResponseCode::NXDomain,
    );
    // An empty label cannot be expressed as a name, so send raw bytes: header + "\0\0" ...
    let mut q = query(&n("svc1.testns.svc"), RecordType::A, None);
    q[12] = 0; // the question name becomes the root, followed by junk
    let mut out = Vec::new();
    let _ = mcsd_dns::answer(&z, &q, mcsd_dns::Transport::Udp, &mut out);
}
