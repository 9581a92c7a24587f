// Command vllm-hpa stands up, checks and tears down the stack that
// autoscales a vLLM inference server on GKE on the server's own metrics.
package main

import (
	"os"

	"github.com/vllm-hpa/vllm-hpa/cmd"
)

func main() { os.Exit(cmd.Main(os.Args[1:])) }
