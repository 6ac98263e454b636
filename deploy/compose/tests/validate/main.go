// Command validate loads a Docker Compose file with compose-go (the loader of `docker compose`:
// JSON-schema validation against the Compose specification, interpolation, normalisation and
// consistency checks, e.g. depends_on targets, volumes, networks) and prints the services as
// JSON for further checks. No Docker engine is needed.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: validate docker-compose.yml [more.yml...]")
		os.Exit(2)
	}
	wd := filepath.Dir(os.Args[1])
	opts, err := cli.NewProjectOptions(os.Args[1:],
		cli.WithWorkingDirectory(wd),
		cli.WithOsEnv,
		cli.WithDotEnv,
		cli.WithConsistency(true),
		cli.WithNormalization(true),
		cli.WithInterpolation(true),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
}
