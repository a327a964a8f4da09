module mcsd.local/tests/kube/conformance

go 1.24.0

require (
	github.com/onsi/ginkgo/v2 v2.21.0
	github.com/onsi/gomega v1.35.1
	sigs.k8s.io/mcs-api v0.5.0
	sigs.k8s.io/mcs-api/conformance v0.5.0
)
