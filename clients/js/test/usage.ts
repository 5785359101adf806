// Compiled by `npm run check` (never run): the published types read as a
// TypeScript application would use them.
import { Client, HoldfastError, type Room } from 'holdfast-client';

export async function usage(url: string): Promise<number> {
  const client = new Client(url, { getToken: async () => 'token', offline: 'fail', requestTimeoutMs: 5000 });
  client.on('state', (s) => {
    const code: number | undefined = s.code;
    if (s.state === 'closed' && s.error) console.log(s.error.code, code);
  });
  await client.connect();
  const room: Room = client.room('chat:1');
  const stop = room.on('message', (m) => console.log(m.offset + 1, m.from, m.data));
  room.on('gap', (g) => console.log(g.reason === 'epoch' ? g.epoch : g.from));
  room.on('presence_diff', (d) => console.log(d.joins.map((j) => j.user), d.leaves.length));
  const joined = await room.join({ history: 10 });
  const { offset } = await room.publish({ text: 'hi' });
  const page = await room.history({ since: joined.offset - 5, limit: 5 });
  const members = await room.presence();
  try {
    await client.rpc('printers.pause', { printer: 'mk4' });
  } catch (e) {
    if (e instanceof HoldfastError && e.code === 'printer_busy' && !e.local) stop();
  }
  client.close();
  return offset + page.messages.length + members.length;
}
