import { type Logger, pino } from 'pino';

/** The balancer's default logger: pino, JSON lines on stderr (stdout carries only the ready line). */
export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'dstore-balancer', pid: process.pid } }, pino.destination(2));
}
