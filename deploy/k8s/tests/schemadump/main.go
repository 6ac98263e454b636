// Command schemadump prints, as JSON, the Kubernetes OpenAPI v2 definitions that kustomize's
// kyaml module embeds (Kubernetes v1.21.2). deploy/k8s/tests/openapi2jsonschema.py turns them
// into the standalone strict JSON schemas kubeconform reads, so that validation works without
// downloading schemas from GitHub.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"sigs.k8s.io/kustomize/kyaml/openapi"
	"sigs.k8s.io/kustomize/kyaml/openapi/kubernetesapi"
)

func main() {
	s := openapi.Schema()
	if s == nil {
		fmt.Fprintln(os.Stderr, "no embedded schema")
		os.Exit(1)
	}
	out, err := json.Marshal(map[string]any{"info": kubernetesapi.Info, "definitions": s.Definitions})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
}
