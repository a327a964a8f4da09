// Package conformance runs the upstream MCS conformance suite (sigs.k8s.io/mcs-api/conformance)
// against the real-Kubernetes tier. The suite's specs register themselves when its package is
// imported; this test starts them. tests/kube/conformance/run.sh passes the flags.
package conformance

import (
	"testing"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"

	_ "sigs.k8s.io/mcs-api/conformance"
)

func TestConformance(t *testing.T) {
	gomega.RegisterFailHandler(ginkgo.Fail)
	ginkgo.RunSpecs(t, "MCS conformance: mcsd")
}
