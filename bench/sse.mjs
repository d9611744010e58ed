// sse.mjs: the JSON events of an OpenAI-style streamed answer (server-sent events), for the
// bench clients. An event carrying `error` throws; `data: [DONE]` ends nothing by itself (the
// stream's end does).
//
//   for await (const ev of sseEvents(res)) { ... }   // res: a fetch Response
export async function* sseEvents(res) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let k;
    while ((k = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, k);
      buf = buf.slice(k + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const j = JSON.parse(ev.slice(6));
      if (j.error) throw new Error(JSON.stringify(j.error));
      yield j;
    }
  }
}
