// Command chat streams one answer from turnout's GenerateService through the
// generated Go stubs (gen/go, `make proto`).
//
//	go run ./examples/go [-gateway host:port] [-model NAME] [-api-key KEY] [-timeout 120s] prompt words...
//
// Prints the answer to stdout as it arrives, then on stderr one line
// `[route -> backend/model, finish STOP, ttft 12 ms]`. On a failed call prints
// `error: <CODE NAME>: <details>` to stderr and exits 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	turnoutv1 "github.com/turnout/turnout/gen/go/turnout/v1"
)

func main() {
	gateway := flag.String("gateway", "127.0.0.1:50051", "gateway address")
	model := flag.String("model", "", "route or model name (empty: the gateway's default)")
	apiKey := flag.String("api-key", os.Getenv("TURNOUT_API_KEY"), "API key, sent as `authorization: Bearer`")
	timeout := flag.Duration("timeout", 120*time.Second, "deadline")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "no prompt given")
		flag.Usage()
		os.Exit(2)
	}
	if err := chat(*gateway, *model, *apiKey, *timeout, strings.Join(flag.Args(), " ")); err != nil {
		s := status.Convert(err)
		fmt.Fprintf(os.Stderr, "error: %s: %s\n", strings.ToUpper(codeName(s.Code().String())), s.Message())
		os.Exit(1)
	}
}

// codeName turns grpc-go's "NotFound" into the gRPC name "NOT_FOUND".
func codeName(camel string) string {
	var b strings.Builder
	for i, r := range camel {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func chat(gateway, model, apiKey string, timeout time.Duration, prompt string) error {
	conn, err := grpc.Dial(gateway, grpc.WithInsecure()) // plaintext; use grpc.WithTransportCredentials for TLS
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if apiKey != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKey)
	}
	stream, err := turnoutv1.NewGenerateServiceClient(conn).Generate(ctx, &turnoutv1.GenerateRequest{
		Model:    model,
		Messages: []*turnoutv1.Message{{Role: turnoutv1.Role_ROLE_USER, Content: prompt}},
	})
	if err != nil {
		return err
	}
	var started *turnoutv1.GenerateStarted
	for {
		response, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch event := response.Event.(type) {
		case *turnoutv1.GenerateResponse_Started:
			started = event.Started
		case *turnoutv1.GenerateResponse_Delta:
			for _, call := range event.Delta.GetToolCalls() {
				fmt.Printf("\n[tool call %s(%s)]\n", call.GetName(), call.GetArguments())
			}
			fmt.Print(event.Delta.GetContent())
		case *turnoutv1.GenerateResponse_Completed:
			fmt.Println()
			c := event.Completed
			finish := strings.TrimPrefix(c.GetFinishReason().String(), "FINISH_REASON_")
			fmt.Fprintf(os.Stderr, "[%s -> %s/%s, finish %s, ttft %d ms]\n", started.GetRoute(), started.GetBackend(),
				started.GetModel(), finish, c.GetTimeToFirstToken().AsDuration().Milliseconds())
		}
	}
}
