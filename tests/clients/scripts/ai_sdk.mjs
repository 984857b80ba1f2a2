// The Vercel AI SDK (`ai`) against Hoshikage: for each provider named on the command line,
// generateText and streamText with a `read` tool, as an app built on it runs them. Prints
// one line per run: `<provider> <mode> OK <text>` or `<provider> <mode> FAIL <error>`.
// The server's address is $BASE_URL; the tool reads files of the working folder.
import { generateText, streamText, tool, stepCountIs } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { createAnthropic } from '@ai-sdk/anthropic';
import { createOllama } from 'ollama-ai-provider-v2';
import { z } from 'zod';
import fs from 'node:fs';

const base = process.env.BASE_URL;
const model = process.env.MODEL;
const openai = createOpenAI({ baseURL: `${base}/v1`, apiKey: 'unused' });
const providers = {
  // The Responses API: the provider's default, which stores each response and sends the
  // earlier steps' items back as item_reference inputs.
  'openai': () => openai(model),
  'openai-chat': () => openai.chat(model),
  'openai-compatible': () =>
    createOpenAICompatible({ name: 'hoshikage', baseURL: `${base}/v1`, apiKey: 'unused' })(model),
  'anthropic': () => createAnthropic({ baseURL: `${base}/v1`, apiKey: 'unused' })(model),
  'ollama': () => createOllama({ baseURL: `${base}/api` })(model),
};
const tools = {
  read: tool({
    description: 'Read a file of the working folder',
    inputSchema: z.object({ path: z.string() }),
    execute: async ({ path }) => fs.readFileSync(path, 'utf8'),
  }),
};
const prompt = 'What is the secret in secret.txt?';

for (const name of process.argv.slice(2)) {
  for (const mode of ['generate', 'stream']) {
    try {
      let text;
      if (mode === 'generate') {
        ({ text } = await generateText({ model: providers[name](), tools, prompt, stopWhen: stepCountIs(4) }));
      } else {
        let failure;
        const run = streamText({
          model: providers[name](), tools, prompt, stopWhen: stepCountIs(4),
          onError: ({ error }) => { failure = error; },
        });
        text = '';
        for await (const piece of run.textStream) text += piece;
        if (failure) throw failure;
      }
      console.log(`${name} ${mode} OK ${text}`);
    } catch (error) {
      console.log(`${name} ${mode} FAIL ${String(error?.message ?? error).replace(/\s+/g, ' ')}`);
    }
  }
}
