module github.com/turnout/turnout/examples/go

go 1.19

require (
	github.com/turnout/turnout/gen/go v0.0.0
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)

replace github.com/turnout/turnout/gen/go => ../../gen/go
