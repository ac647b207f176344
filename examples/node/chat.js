#!/usr/bin/env node
// Streams one answer from turnout's GenerateService, loading the .proto files
// from ../../proto at run time (no code generation).
//
//   node chat.js [--gateway host:port] [--model NAME] [--api-key KEY] [--timeout SECONDS] prompt words...
//
// Prints the answer to stdout as it arrives, then on stderr one line
// `[route -> backend/model, finish STOP, ttft 12 ms]`. On a failed call prints
// `error: <CODE NAME>: <details>` to stderr and exits 1.
'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const USAGE = 'usage: node chat.js [--gateway host:port] [--model NAME] [--api-key KEY] [--timeout SECONDS] prompt words...';

function parse(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      gateway: { type: 'string', default: '127.0.0.1:50051' },
      model: { type: 'string', default: '' }, // empty: the gateway's default route
      'api-key': { type: 'string', default: process.env.TURNOUT_API_KEY || '' },
      timeout: { type: 'string', default: '120' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (positionals.length === 0) throw new Error('no prompt given');
  const timeout = Number(values.timeout);
  if (!(timeout > 0)) throw new Error(`--timeout must be a positive number of seconds, not ${values.timeout}`);
  return { ...values, timeout, prompt: positionals.join(' ') };
}

function loadApi() {
  const protoRoot = path.join(__dirname, '..', '..', 'proto');
  const definition = protoLoader.loadSync('turnout/v1/generate.proto', {
    // Imports are resolved against these directories; google/protobuf/*.proto
    // (Duration, Timestamp) come built into protobufjs.
    includeDirs: [protoRoot],
    keepCase: true, // field names as in the .proto: time_to_first_token, not timeToFirstToken
    longs: String, // int64/uint64 as decimal strings (JS numbers lose precision past 2^53)
    enums: String, // enum values by name: "FINISH_REASON_STOP", not 1
    defaults: true, // unset scalars as their default instead of undefined
    oneofs: true, // sets `event` to the name of the oneof member that is present
  });
  return grpc.loadPackageDefinition(definition).turnout.v1;
}

function millis(duration) {
  if (!duration) return '?';
  return Math.round(Number(duration.seconds) * 1000 + duration.nanos / 1e6);
}

function main() {
  let args;
  try {
    args = parse(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err.message}\n${USAGE}\n`);
    process.exit(2);
  }
  const api = loadApi();
  const client = new api.GenerateService(args.gateway, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  if (args['api-key']) metadata.set('authorization', `Bearer ${args['api-key']}`);

  const request = {
    model: args.model,
    messages: [{ role: 'ROLE_USER', content: args.prompt }],
  };
  const deadline = new Date(Date.now() + args.timeout * 1000);
  const call = client.Generate(request, metadata, { deadline });

  let started = null;
  call.on('data', (response) => {
    switch (response.event) {
      case 'started':
        started = response.started;
        break;
      case 'delta': {
        const delta = response.delta;
        for (const tool of delta.tool_calls) process.stdout.write(`\n[tool call ${tool.name}(${tool.arguments})]\n`);
        if (delta.content) process.stdout.write(delta.content); // unbuffered: written as it arrives
        break;
      }
      case 'completed': {
        const c = response.completed;
        process.stdout.write('\n');
        const where = started ? `${started.route} -> ${started.backend}/${started.model}` : '?';
        const finish = String(c.finish_reason).replace(/^FINISH_REASON_/, '');
        process.stderr.write(`[${where}, finish ${finish}, ttft ${millis(c.time_to_first_token)} ms]\n`);
        break;
      }
      default:
        break;
    }
  });
  call.on('error', (err) => {
    // err.code is the numeric status; grpc.status maps names to numbers.
    const name = Object.keys(grpc.status).find((key) => grpc.status[key] === err.code) || String(err.code);
    process.stderr.write(`error: ${name}: ${err.details}\n`);
    client.close();
    process.exitCode = 1;
  });
  call.on('end', () => client.close());
}

main();
