import type { Container } from '@mnedc/lab';

/**
 * Runs `body`; if it fails, the error's message gets what each container's `command` printed (the mnedc
 * journals, as the caller asks for them): what a failed step of a system test needs to be understood.
 */
export async function withJournals(box: Record<string, Container>, command: string, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (e) {
    const notes: string[] = [];
    for (const [name, container] of Object.entries(box)) {
      const log = await container.exec(command, 20_000).catch((err: Error) => ({ stdout: `(${err.message})`, stderr: '' }));
      notes.push(`--- ${name}:\n${log.stdout}${log.stderr}`);
    }
    (e as Error).message += `\n${notes.join('\n')}`;
    throw e;
  }
}
