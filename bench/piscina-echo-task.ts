/** piscina baseline: the pool's task, which returns its argument (so it moves the same bytes). */
export default function echo(x: unknown): unknown {
  return x;
}
