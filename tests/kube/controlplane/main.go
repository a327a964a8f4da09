// Command kube is the real Kubernetes control plane for mcsd's real-cluster test tier, built
// from the published Go modules: one multi-call binary, so the three servers and etcd share one
// link. The first argument names the component; the rest are that component's own flags.
//
//	kube etcd --name ... --data-dir ...
//	kube apiserver --etcd-servers ...
//	kube controller-manager --kubeconfig ...
//	kube scheduler --kubeconfig ...
//	kube proxy --kubeconfig ... --proxy-mode iptables|nftables
//
// Called as `kubectl` (a link named so), it is kubectl of the same release, so the tier's own
// kubectl calls (`kubectl create token`, …) never depend on the machine's kubectl version.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"

	"go.etcd.io/etcd/server/v3/etcdmain"

	// kubectl's client auth plugins.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/component-base/logs"
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	if filepath.Base(os.Args[0]) == "kubectl" {
		runKubectl()
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kube etcd|apiserver|controller-manager|scheduler|proxy [flags]")
		os.Exit(2)
	}
	component, rest := os.Args[1], os.Args[2:]
	switch component {
	case "etcd":
		// etcdmain parses its arguments itself, with the program name first.
		etcdmain.Main(append([]string{"etcd"}, rest...))
	case "apiserver":
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	case "controller-manager":
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	case "scheduler":
		cmd := scheduler.NewSchedulerCommand()
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	case "proxy":
		cmd := proxy.NewProxyCommand()
		cmd.SetArgs(rest)
		os.Exit(cli.Run(cmd))
	default:
		fmt.Fprintf(os.Stderr, "kube: unknown component %q (etcd, apiserver, controller-manager, scheduler, proxy)\n", component)
		os.Exit(2)
	}
}

// runKubectl is kubectl's own main: it reads os.Args itself (plugins, verbosity).
func runKubectl() {
	logs.GlogSetter(kubectl.GetLogVerbosity(os.Args)) // nolint:errcheck
	command := kubectl.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err)
	}
}
