// Voice mode: a spoken conversation over /v1/realtime. The microphone streams as 24 kHz pcm16;
// hands-free lets the server's VAD end each turn, push-to-talk sends the held speech on release.
// The answer's audio plays as it arrives; speaking over it stops it (barge-in).

const RATE = 24000;
const PIECE = RATE / 25; // 40 ms

export class VoiceSession {
  constructor({ mode, apiKey, onUser, onAnswer, onAnswerDone, onError, onState }) {
    Object.assign(this, { mode, apiKey, onUser, onAnswer, onAnswerDone, onError, onState });
    this.pending = [];
    this.pendingLength = 0;
    this.talking = mode === "hands-free";
    this.sources = new Set();
    this.playAt = 0;
  }

  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    this.context = new AudioContext({ sampleRate: RATE });
    await this.context.audioWorklet.addModule("/playground/pcm-capture.js");
    const capture = new AudioWorkletNode(this.context, "pcm-capture");
    capture.port.onmessage = (e) => this.captured(e.data);
    this.context.createMediaStreamSource(this.stream).connect(capture);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    // a browser cannot set Authorization on a socket: the key rides in a subprotocol, as OpenAI's
    const protocols = ["realtime", ...(this.apiKey ? [`openai-insecure-api-key.${this.apiKey}`] : [])];
    this.ws = new WebSocket(`${scheme}://${location.host}/v1/realtime`, protocols);
    this.ws.onmessage = (e) => this.received(JSON.parse(e.data));
    this.ws.onerror = () => this.onError("The voice connection failed.");
    this.ws.onclose = () => this.onState("closed");
    await new Promise((resolve) => this.ws.addEventListener("open", resolve, { once: true }));
    const turns = this.mode === "hands-free" ? { type: "server_vad" } : null;
    this.send({ type: "session.update", session: { turn_detection: turns } });
    this.onState(this.mode === "hands-free" ? "listening" : "hold to talk");
  }

  stop() {
    this.silence();
    this.ws?.close();
    this.stream?.getTracks().forEach((track) => track.stop());
    this.context?.close();
  }

  press() {
    if (this.mode !== "push-to-talk") return;
    this.silence();
    this.send({ type: "response.cancel" });
    this.talking = true;
    this.onState("talking");
  }

  release() {
    if (this.mode !== "push-to-talk" || !this.talking) return;
    this.talking = false;
    this.flush();
    this.send({ type: "input_audio_buffer.commit" });
    this.send({ type: "response.create" });
    this.onState("hold to talk");
  }

  send(event) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(event));
  }

  captured(samples) {
    if (!this.talking) return;
    this.pending.push(samples);
    this.pendingLength += samples.length;
    if (this.pendingLength >= PIECE) this.flush();
  }

  flush() {
    if (!this.pendingLength) return;
    const pcm = new Int16Array(this.pendingLength);
    let offset = 0;
    for (const chunk of this.pending) {
      for (let i = 0; i < chunk.length; i++) pcm[offset++] = Math.max(-1, Math.min(1, chunk[i])) * 32767;
    }
    this.pending = [];
    this.pendingLength = 0;
    this.send({ type: "input_audio_buffer.append", audio: toBase64(new Uint8Array(pcm.buffer)) });
  }

  received(event) {
    switch (event.type) {
      case "input_audio_buffer.speech_started":
        this.silence(); // barge-in: the server cancels the answer, the page stops playing it
        this.onState("hearing you");
        break;
      case "conversation.item.input_audio_transcription.completed":
        this.onUser(event.transcript);
        break;
      case "response.audio_transcript.delta":
        this.onAnswer(event.delta);
        break;
      case "response.audio.delta":
        this.play(event.delta);
        break;
      case "response.done":
        this.onAnswerDone(event.response);
        if (this.mode === "hands-free") this.onState("listening");
        break;
      case "error":
        this.onError(event.error?.message || "The voice session failed.");
        break;
      default:
        break;
    }
  }

  play(base64) {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const pcm = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
    const buffer = this.context.createBuffer(1, pcm.length, RATE);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    this.playAt = Math.max(this.playAt, this.context.currentTime);
    source.start(this.playAt);
    this.playAt += buffer.duration;
    this.sources.add(source);
    source.onended = () => this.sources.delete(source);
  }

  silence() {
    for (const source of this.sources) source.stop();
    this.sources.clear();
    this.playAt = 0;
  }
}

function toBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}
