// A well-behaved plugin: counts the words of a text.
export const handler = {
  onRequest({ text }) {
    return text.split(/\s+/).filter(Boolean).length;
  },
};
